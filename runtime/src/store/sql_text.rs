//! Looking at a projection's SQL text before it runs: statements reel
//! refuses, and the one placeholder style (`$1`) mapped onto SQLite's (`?1`).

/// Statements that would take the transaction, the session or the server
/// away from reel, keyed by their first keyword.
const REFUSED: &[&str] = &[
    "ABORT",
    "ATTACH",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "COMMIT",
    "COPY",
    "DETACH",
    "DISCARD",
    "DO",
    "END",
    "GRANT",
    "LISTEN",
    "LOAD",
    "NOTIFY",
    "PRAGMA",
    "PREPARE",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SET",
    "START",
    "UNLISTEN",
    "VACUUM",
];

/// Why a statement is refused, or `None` when it may run.
pub fn refusal(statement: &str) -> Option<String> {
    let keyword = first_keyword(statement);
    if keyword.is_empty() {
        return Some("empty statement".into());
    }
    REFUSED.iter().any(|r| r.eq_ignore_ascii_case(keyword)).then(|| {
        format!(
            "`{}` statements are not allowed in projections: reel owns the transaction and the session",
            keyword.to_ascii_uppercase()
        )
    })
}

/// The first word of the statement, after whitespace, comments and `(`.
fn first_keyword(statement: &str) -> &str {
    let mut rest = statement;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |i| &after[i + 2..]);
        } else {
            let end = trimmed.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(trimmed.len());
            return &trimmed[..end];
        }
    }
}

/// Rewrite `$1`, `$2`, ... to SQLite's `?1`, `?2`, ... outside string
/// literals, quoted identifiers and comments.
pub fn sqlite_placeholders(statement: &str) -> std::borrow::Cow<'_, str> {
    if !statement.contains('$') {
        return statement.into();
    }
    let bytes = statement.as_bytes();
    let mut out = String::with_capacity(statement.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let end = match c {
            b'\'' | b'"' | b'`' => closing(bytes, i + 1, c),
            b'[' => closing(bytes, i + 1, b']'),
            b'-' if bytes.get(i + 1) == Some(&b'-') => statement[i..].find('\n').map_or(bytes.len(), |n| i + n + 1),
            b'/' if bytes.get(i + 1) == Some(&b'*') => statement[i + 2..].find("*/").map_or(bytes.len(), |n| i + n + 4),
            b'$' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push('?');
                i += 1;
                continue;
            }
            _ => i + 1,
        };
        out.push_str(&statement[i..end]);
        i = end;
    }
    out.into()
}

/// Index just past the quote that closes one opened before `from` (a doubled
/// quote is an escaped one).
fn closing(bytes: &[u8], from: usize, quote: u8) -> usize {
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// Quote an identifier for SQL (both backends): `"name"`, doubling quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_and_session_control_is_refused_whatever_the_spelling() {
        for s in ["COMMIT", "  commit;", "/* x */ BEGIN", "-- c\nrollback", "(SAVEPOINT a)", "SET ROLE x", "reset role"]
        {
            assert!(refusal(s).is_some(), "{s}");
        }
        assert_eq!(
            refusal("set role postgres").unwrap(),
            "`SET` statements are not allowed in projections: reel owns the transaction and the session"
        );
        for s in ["SELECT 1", "insert into t values (1)", "WITH x AS (SELECT 1) SELECT * FROM x", "CREATE TABLE t (a)"]
        {
            assert_eq!(refusal(s), None, "{s}");
        }
        assert!(refusal("  -- only a comment").is_some());
    }

    #[test]
    fn placeholders_are_rewritten_outside_literals_only() {
        assert_eq!(sqlite_placeholders("SELECT $1, $12"), "SELECT ?1, ?12");
        assert_eq!(
            sqlite_placeholders("SELECT '$1', \"$2\", $3 -- $4\n, $5 /* $6 */ , 'it''s $7', $8"),
            "SELECT '$1', \"$2\", ?3 -- $4\n, ?5 /* $6 */ , 'it''s $7', ?8"
        );
        assert_eq!(sqlite_placeholders("SELECT price$ FROM t"), "SELECT price$ FROM t");
    }
}
