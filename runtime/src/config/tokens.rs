//! API tokens and their scopes (ADR 33). reel keeps only each token's
//! SHA-256: a fast hash, because tokens are long random strings (nothing to
//! brute-force) and a slow password hash on every request would cost the
//! read path. A presented token is hashed and compared with every stored
//! hash in constant time.
//!
//! One token per line, in a file (`--tokens FILE`) or `REEL_TOKENS` (lines
//! or `;`-separated): `NAME SCOPES SECRET`, where SCOPES is a comma-separated
//! list of `read`, `read:PROJECTION`, `append` and `admin`, and SECRET is
//! `sha256:HEX` (what `reel token` prints) or the token itself.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// Shortest token accepted as a literal: a guessable one is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The scope a route needs (its `x-reel-scope` in `openapi.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Reads: status, read models, the log.
    Read,
    /// Appending events and sending commands.
    Append,
    /// Control: pause, rebuild, delete, dead-letter retries and skips.
    Admin,
}

impl Scope {
    /// Its name in `openapi.json` and token lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Append => "append",
            Self::Admin => "admin",
        }
    }
}

/// Which projections a token may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// None.
    Nothing,
    /// Every route of scope `read`.
    All,
    /// Only the routes naming one of these projections (`read:NAME`).
    Only(BTreeSet<String>),
}

/// What one token may do. `admin` includes `read` and `append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Its reads.
    pub read: Reads,
    /// `append`.
    pub append: bool,
    /// `admin`.
    pub admin: bool,
}

impl Grants {
    /// May a token with these grants call a route of `scope` that names
    /// `projection` (its `{name}` path parameter), if any?
    pub fn allow(&self, scope: Scope, projection: Option<&str>) -> bool {
        if self.admin {
            return true;
        }
        match scope {
            Scope::Admin => false,
            Scope::Append => self.append,
            Scope::Read => match &self.read {
                Reads::All => true,
                Reads::Nothing => false,
                Reads::Only(names) => projection.is_some_and(|p| names.contains(p)),
            },
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut grants = Self { read: Reads::Nothing, append: false, admin: false };
        for scope in text.split(',') {
            match scope.split_once(':') {
                None if scope == "read" => grants.read = Reads::All,
                None if scope == "append" => grants.append = true,
                None if scope == "admin" => grants.admin = true,
                Some(("read", name)) if crate::model::is_projection_name(name) => {
                    if let Reads::Nothing = grants.read {
                        grants.read = Reads::Only(BTreeSet::new());
                    }
                    if let Reads::Only(names) = &mut grants.read {
                        names.insert(name.to_owned());
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown scope `{scope}`: use read, read:PROJECTION, append or admin, separated by commas"
                    ));
                }
            }
        }
        Ok(grants)
    }
}

/// One accepted token.
#[derive(Clone)]
pub struct Token {
    /// Who holds it (in the log and in refusals).
    pub name: String,
    /// SHA-256 of the token.
    hash: [u8; 32],
    /// What it may do.
    pub grants: Grants,
}

/// The tokens reel accepts; none means no authentication (loopback only,
/// or `--insecure`).
#[derive(Clone, Default)]
pub struct Tokens {
    tokens: Arc<[Token]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.tokens.iter().map(|t| (&t.name, &t.grants))).finish()
    }
}

impl Tokens {
    /// Parse token lines; an error names `origin` and the line.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let mut tokens: Vec<Token> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let token = parse_line(line).map_err(|e| format!("{origin}:{}: {e}", number + 1))?;
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(format!("{origin}:{}: a second token named `{}`", number + 1, token.name));
            }
            tokens.push(token);
        }
        Ok(Self { tokens: tokens.into() })
    }

    /// Read a token file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Both sets (a file and the environment); a name in both is an error.
    pub fn merge(self, other: Self) -> Result<Self, String> {
        let mut tokens = self.tokens.to_vec();
        for token in other.tokens.iter() {
            if tokens.iter().any(|t| t.name == token.name || t.hash == token.hash) {
                return Err(format!("the token `{}` is given twice (file and environment?)", token.name));
            }
            tokens.push(token.clone());
        }
        Ok(Self { tokens: tokens.into() })
    }

    /// No token configured: authentication is off.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token named `name`.
    pub fn named(&self, name: &str) -> Option<&Token> {
        self.tokens.iter().find(|t| t.name == name)
    }

    /// The token whose hash matches `presented`. Every stored hash is compared
    /// in full, so the time taken says nothing about which bytes matched.
    pub fn find(&self, presented: &str) -> Option<&Token> {
        let hash = sha256(presented);
        let mut found = None;
        for token in self.tokens.iter() {
            let difference = token.hash.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if std::hint::black_box(difference) == 0 {
                found = Some(token);
            }
        }
        found
    }
}

fn parse_line(line: &str) -> Result<Token, String> {
    let mut words = line.split_whitespace();
    let (Some(name), Some(scopes), Some(secret), None) = (words.next(), words.next(), words.next(), words.next())
    else {
        return Err("a token line is `NAME SCOPES SECRET`, e.g. `ci admin sha256:...` (see `reel token`)".into());
    };
    let grants = Grants::parse(scopes)?;
    let hash = match secret.strip_prefix("sha256:") {
        Some(hex) => parse_hex(hex).ok_or("`sha256:` takes the 64 hex digits of the token's SHA-256")?,
        None if secret.chars().count() < MIN_TOKEN_CHARS => {
            return Err(format!(
                "the token of `{name}` is shorter than {MIN_TOKEN_CHARS} characters; `reel token` makes a random one"
            ));
        }
        None => sha256(secret),
    };
    Ok(Token { name: name.to_owned(), hash, grants })
}

/// SHA-256 of a token.
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Lowercase hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new random token (32 bytes, hex) and the line that accepts it.
pub fn generate(name: &str, scopes: &str) -> Result<(String, String), String> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("a token's name is one word, not `{name}`"));
    }
    Grants::parse(scopes)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let token = format!("reel_{}", hex(&bytes));
    let line = format!("{name} {scopes} sha256:{}", hex(&sha256(&token)));
    Ok((token, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_give_hashed_tokens_with_scopes() {
        let (token, line) = generate("ci", "read:orders,append").unwrap();
        let text = format!("# a comment\n\n{line}\nops admin a-literal-token-of-length\n");
        let tokens = Tokens::parse(&text, "tokens.txt").unwrap();
        let ci = tokens.find(&token).unwrap();
        assert_eq!(ci.name, "ci");
        assert!(ci.grants.allow(Scope::Read, Some("orders")));
        assert!(!ci.grants.allow(Scope::Read, Some("customers")));
        assert!(!ci.grants.allow(Scope::Read, None));
        assert!(ci.grants.allow(Scope::Append, None));
        assert!(!ci.grants.allow(Scope::Admin, Some("orders")));
        let ops = tokens.find("a-literal-token-of-length").unwrap();
        assert!(ops.grants.allow(Scope::Read, None) && ops.grants.allow(Scope::Append, None));
        assert!(tokens.find("a-literal-token-of-lengtH").is_none());
        assert!(tokens.find("").is_none());
        assert!(!format!("{tokens:?}").contains("literal"), "Debug shows no secret");
    }

    #[test]
    fn bad_lines_are_refused_naming_the_line() {
        let refuse = |text: &str| Tokens::parse(text, "t").unwrap_err();
        assert_eq!(
            refuse("\nci read short"),
            "t:2: the token of `ci` is shorter than 16 characters; `reel token` makes a random one"
        );
        assert!(refuse("ci write 0123456789abcdef0").starts_with("t:1: unknown scope `write`"));
        assert!(refuse("ci read:Bad/Name 0123456789abcdef0").starts_with("t:1: unknown scope `read:Bad/Name`"));
        assert!(refuse("ci read sha256:abc").starts_with("t:1: `sha256:` takes"));
        assert!(refuse("ci read").starts_with("t:1: a token line is `NAME SCOPES SECRET`"));
        assert_eq!(refuse("ci read 0123456789abcdef0\nci admin 0123456789abcdef1"), "t:2: a second token named `ci`");
    }
}
