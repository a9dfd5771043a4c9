//! Looking at a projection's SQL text before it runs: statements reel
//! refuses, the one placeholder style (`$1`) mapped onto SQLite's (`?1`),
//! and the texts already checked.

// foldhash: every `sql.execute` looks its text up here (as the KV cache does its keys).
use foldhash::{HashMap, HashMapExt};

/// Projection statements that passed the checks, with what the backend made
/// of each, so a text is checked once. Bounded, so a projection that builds
/// its texts (values spliced in) cannot grow it without end.
#[derive(Debug)]
pub struct Checked<V> {
    texts: HashMap<String, V>,
}

/// Distinct statement texts remembered as checked.
const CHECKED_STATEMENTS: usize = 1024;

impl<V> Default for Checked<V> {
    fn default() -> Self {
        Self { texts: HashMap::new() }
    }
}

impl<V> Checked<V> {
    /// What the statement became when it passed, if it did.
    pub fn get(&self, statement: &str) -> Option<&V> {
        self.texts.get(statement)
    }

    /// Remember that `statement` passed (forgetting all others when full).
    pub fn remember(&mut self, statement: &str, value: V) {
        if self.texts.len() >= CHECKED_STATEMENTS {
            self.texts.clear();
        }
        self.texts.insert(statement.to_owned(), value);
    }
}

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
    "DEALLOCATE",
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

/// Why a statement is refused, or `None` when it may run. Its first keyword
/// is read both ways block comments can end (PostgreSQL nests them, SQLite
/// does not), so a nested comment cannot hide a refused keyword.
pub fn refusal(statement: &str) -> Option<String> {
    let keywords = [first_keyword(statement, false), first_keyword(statement, true)];
    if keywords.iter().all(|k| k.is_empty()) {
        return Some("empty statement".into());
    }
    let refused = keywords.into_iter().find(|k| REFUSED.iter().any(|r| r.eq_ignore_ascii_case(k)))?;
    Some(format!(
        "`{}` statements are not allowed in projections: reel owns the transaction and the session",
        refused.to_ascii_uppercase()
    ))
}

/// Whether the statement is a plain `INSERT`, `UPDATE` or `DELETE` (by its
/// first keyword: not one under `WITH`).
pub fn is_plain_write(statement: &str) -> bool {
    let keyword = first_keyword(statement, true);
    keyword == first_keyword(statement, false)
        && ["INSERT", "UPDATE", "DELETE"].iter().any(|k| k.eq_ignore_ascii_case(keyword))
}

/// The first word of the statement, after whitespace, comments and `(`;
/// block comments `nested` as on PostgreSQL or not as on SQLite.
fn first_keyword(statement: &str, nested: bool) -> &str {
    let mut rest = statement;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.find('\n').map_or("", |i| &after[i..]);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = if nested { past_nested_comment(after) } else { after.find("*/").map_or("", |i| &after[i + 2..]) };
        } else {
            let end = trimmed.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(trimmed.len());
            return &trimmed[..end];
        }
    }
}

/// What follows the block comment whose opening `/*` precedes `text`, with
/// comments inside it nested.
fn past_nested_comment(text: &str) -> &str {
    let mut depth = 1;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i + 1 < bytes.len() {
        match &bytes[i..i + 2] {
            b"/*" => depth += 1,
            b"*/" => depth -= 1,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
        if depth == 0 {
            return &text[i..];
        }
    }
    ""
}

/// A name in the statement that belongs to reel: an identifier starting with
/// `_reel_`, or the schema `reel` (as `reel.` or `"reel".`), outside string
/// literals and comments. PostgreSQL's privileges stop a projection anyway;
/// this gives the same clear refusal as SQLite's authorizer.
pub fn reserved_name(statement: &str) -> Option<String> {
    let bytes = statement.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let (word, end) = match c {
            b'\'' => (None, closing(bytes, i + 1, b'\'')),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                (None, statement[i..].find('\n').map_or(bytes.len(), |n| i + n + 1))
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                (None, statement[i + 2..].find("*/").map_or(bytes.len(), |n| i + n + 4))
            }
            b'$' => {
                // A dollar-quoted string: $tag$ ... $tag$.
                let tag_end = statement[i + 1..].find('$').map(|n| i + 1 + n);
                match tag_end {
                    Some(t)
                        if statement[i + 1..t].chars().all(|c| c.is_alphanumeric() || c == '_')
                            && !statement[i + 1..t].starts_with(|c: char| c.is_ascii_digit()) =>
                    {
                        let tag = &statement[i..=t];
                        (None, statement[t + 1..].find(tag).map_or(bytes.len(), |n| t + 1 + n + tag.len()))
                    }
                    _ => (None, i + 1),
                }
            }
            b'"' => {
                let end = closing(bytes, i + 1, b'"');
                (Some(statement[i + 1..end.saturating_sub(1).max(i + 1)].replace("\"\"", "\"")), end)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = statement[i..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                    .map_or(bytes.len(), |n| i + n);
                (Some(statement[i..end].to_owned()), end)
            }
            _ => (None, i + 1),
        };
        if let Some(word) = word {
            let lower = word.to_ascii_lowercase();
            let qualifier = statement[end..].trim_start().starts_with('.');
            if lower.starts_with("_reel_") || (lower == "reel" && qualifier) {
                return Some(word);
            }
        }
        i = end.max(i + 1);
    }
    None
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
        // PostgreSQL nests block comments, SQLite does not: a keyword after
        // either reading's end of the comment counts.
        for s in ["/* /* */ SELECT 1 */ COMMIT", "/* a /* b */ COMMIT */ SELECT 1", "/*/**/*/ rollback"] {
            assert!(refusal(s).is_some(), "{s}");
        }
        assert_eq!(refusal("/* a /* b */ */ SELECT 1"), None);
        assert!(is_plain_write("/* x */ INSERT INTO t VALUES (1)"));
        assert!(!is_plain_write("/* /* */ INSERT */ UPDATE t SET a = 1"));
        assert!(!is_plain_write("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"));
    }

    #[test]
    fn reels_own_names_are_spotted_outside_literals() {
        assert_eq!(reserved_name("SELECT * FROM _reel_kv"), Some("_reel_kv".into()));
        assert_eq!(reserved_name("select * from \"_REEL_KV\""), Some("_REEL_KV".into()));
        assert_eq!(reserved_name("SELECT * FROM reel.checkpoints"), Some("reel".into()));
        assert_eq!(reserved_name("SELECT * FROM \"reel\" . checkpoints"), Some("reel".into()));
        assert_eq!(reserved_name("SELECT '_reel_kv', $$ reel.x $$, $t$ _reel_ $t$ -- _reel_kv"), None);
        assert_eq!(reserved_name("SELECT reel FROM reels WHERE my_reel_count > $1"), None);
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
