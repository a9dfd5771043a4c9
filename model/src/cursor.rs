//! How far a reader has read the log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How far a projection (or any reader) has read the log. Events are
/// delivered in `(tx, id)` order; everything at or before the cursor has
/// been seen.
///
/// On SQLite `tx` is always 0 and `id` is the last event id. On PostgreSQL
/// `tx` is the appending transaction's id (`xid8`): ids commit out of order
/// under concurrent writers, but transaction ids below the snapshot's `xmin`
/// are settled.
///
/// Its [`Display`](fmt::Display) and [`FromStr`] forms are the opaque resume
/// token routes hand out and take back (`after`, `next`, `Last-Event-ID`):
/// `id` alone when `tx` is 0, else `tx.id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// Transaction id of the last event seen (0 on SQLite).
    pub tx: i64,
    /// Event id (position) of the last event seen.
    pub id: i64,
}

impl Cursor {
    /// The start of the log.
    pub const START: Cursor = Cursor { tx: 0, id: 0 };
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tx {
            0 => write!(f, "{}", self.id),
            tx => write!(f, "{tx}.{}", self.id),
        }
    }
}

/// A resume token reel did not hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorTokenError(String);

impl fmt::Display for CursorTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a resume token reel handed out (pass back the token as it came)", self.0)
    }
}

impl std::error::Error for CursorTokenError {}

impl FromStr for Cursor {
    type Err = CursorTokenError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        let number = |s: &str| s.parse::<i64>().ok().filter(|n| *n >= 0 && s.bytes().all(|b| b.is_ascii_digit()));
        let cursor = match token.split_once('.') {
            Some((tx, id)) => number(tx).zip(number(id)).map(|(tx, id)| Cursor { tx, id }),
            None => number(token).map(|id| Cursor { tx: 0, id }),
        };
        cursor.ok_or_else(|| CursorTokenError(token.chars().take(100).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_keep_the_order() {
        for cursor in [Cursor::START, Cursor { tx: 0, id: 42 }, Cursor { tx: 7_000_123, id: 41 }] {
            let token = cursor.to_string();
            assert_eq!(token.parse::<Cursor>(), Ok(cursor), "{token}");
        }
        assert_eq!(Cursor { tx: 0, id: 42 }.to_string(), "42", "SQLite's token is the position");
        assert_eq!(Cursor { tx: 9, id: 41 }.to_string(), "9.41");
        assert!(Cursor { tx: 9, id: 41 } > Cursor { tx: 8, id: 99 }, "delivery order is (tx, id)");
    }

    #[test]
    fn tokens_reel_did_not_hand_out_are_refused_with_their_text() {
        for token in ["", "x", "-1", "1.", ".1", "1.2.3", "+4", "1.-2", " 5"] {
            let error = token.parse::<Cursor>().unwrap_err().to_string();
            assert!(error.starts_with(&format!("`{token}` is not a resume token")), "{token}: {error}");
        }
    }
}
