//! The whole read model of a namespace in one consistent read, and its
//! checksum (ADR 37). A backend walks the namespace ([`Dumps`]); a
//! [`DumpSink`] takes what it finds. [`Checksum`] is the sink of
//! `GET /projections/{name}/checksum`.
//!
//! The checksum is the same on SQLite and PostgreSQL, and whichever language
//! built the read model, when the read model is the same: tables by name,
//! columns by name, rows in the order of their own digests (no primary key
//! order is portable: text collates by locale on PostgreSQL, a table may
//! have none), values in one encoding whatever the backend returned them as
//! (an integral real is the integer), KV entries by key (bytewise on both).

use reel_model::Value;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Checkpoint, StoreError};

/// What a walk of a namespace hands over, in this order: the checkpoint,
/// then each table (by name, bytewise) with its rows, then the KV entries
/// (by key, bytewise).
pub trait DumpSink {
    /// The checkpoint the read sees: everything after is as of it.
    fn checkpoint(&mut self, checkpoint: Checkpoint);
    /// A table begins: its name and columns, in the database's order.
    fn table(&mut self, name: &str, columns: &[String]);
    /// The primary key of the table begun last, when it has one: its
    /// columns in the key's order. Before the table's rows.
    fn key(&mut self, columns: &[String]) {
        let _ = columns;
    }
    /// A row of the table begun last, its values in that table's column order.
    fn row(&mut self, values: &[Value]);
    /// A KV entry.
    fn kv(&mut self, key: &str, value: &[u8]);
}

/// Walking a whole namespace, in one snapshot (a read-only transaction that
/// sees one committed state: tables, KV and checkpoint agree).
pub trait Dumps {
    /// Hand every table (not views: they are computed), its rows, and every
    /// KV entry to `sink`, the checkpoint first. Outside a transaction.
    fn dump(&mut self, sink: &mut dyn DumpSink) -> Result<(), StoreError>;
}

/// The checksum of a read model: of the whole, and of each part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadModelSum {
    /// The position the read model is at (the checkpoint's).
    pub position: i64,
    /// `sha256:` and the hex digest of the whole read model.
    pub checksum: String,
    /// Each table's, by name.
    pub tables: Vec<TableSum>,
    /// The KV table's.
    pub kv: KvSum,
}

/// A table's checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSum {
    /// The table's name.
    pub name: String,
    /// Its rows.
    pub rows: u64,
    /// `sha256:` and the hex digest of its name, columns and rows.
    pub checksum: String,
}

/// The KV table's checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvSum {
    /// Its entries.
    pub entries: u64,
    /// `sha256:` and the hex digest of its entries.
    pub checksum: String,
}

/// A [`DumpSink`] that computes a [`ReadModelSum`].
#[derive(Default)]
pub struct Checksum {
    position: i64,
    tables: Vec<TableSum>,
    table: Option<Table>,
    kv: Sha256,
    kv_entries: u64,
}

/// The table being read.
struct Table {
    name: String,
    /// Column names, sorted.
    columns: Vec<String>,
    /// The database's column index of each sorted column.
    order: Vec<usize>,
    /// Each row's digest; sorted at the end, so that the database's row
    /// order does not matter (32 bytes a row in memory, not the row).
    rows: Vec<[u8; 32]>,
}

impl Table {
    fn finish(mut self) -> TableSum {
        self.rows.sort_unstable();
        let mut digest = Sha256::new();
        field(&mut digest, self.name.as_bytes());
        digest.update((self.columns.len() as u64).to_be_bytes());
        for column in &self.columns {
            field(&mut digest, column.as_bytes());
        }
        digest.update((self.rows.len() as u64).to_be_bytes());
        for row in &self.rows {
            digest.update(row);
        }
        TableSum { name: self.name, rows: self.rows.len() as u64, checksum: hex(digest) }
    }
}

impl Checksum {
    /// The checksum of what the walk handed over.
    pub fn finish(mut self) -> ReadModelSum {
        if let Some(table) = self.table.take() {
            self.tables.push(table.finish());
        }
        let kv = KvSum { entries: self.kv_entries, checksum: hex(self.kv) };
        let mut whole = Sha256::new();
        whole.update(b"reel read model 1");
        whole.update((self.tables.len() as u64).to_be_bytes());
        for table in &self.tables {
            field(&mut whole, table.name.as_bytes());
            field(&mut whole, table.checksum.as_bytes());
        }
        field(&mut whole, kv.checksum.as_bytes());
        ReadModelSum { position: self.position, checksum: hex(whole), tables: self.tables, kv }
    }
}

impl DumpSink for Checksum {
    fn checkpoint(&mut self, checkpoint: Checkpoint) {
        self.position = checkpoint.cursor.id;
    }

    fn table(&mut self, name: &str, columns: &[String]) {
        if let Some(table) = self.table.take() {
            self.tables.push(table.finish());
        }
        let mut order: Vec<usize> = (0..columns.len()).collect();
        order.sort_by(|a, b| columns[*a].as_bytes().cmp(columns[*b].as_bytes()));
        let sorted = order.iter().map(|i| columns[*i].clone()).collect();
        self.table = Some(Table { name: name.to_owned(), columns: sorted, order, rows: Vec::new() });
    }

    fn row(&mut self, values: &[Value]) {
        let Some(table) = self.table.as_mut() else { return };
        let mut digest = Sha256::new();
        for i in &table.order {
            match values.get(*i) {
                Some(value) => encode(&mut digest, value),
                None => encode(&mut digest, &Value::Null),
            }
        }
        table.rows.push(digest.finalize().into());
    }

    fn kv(&mut self, key: &str, value: &[u8]) {
        self.kv_entries += 1;
        field(&mut self.kv, key.as_bytes());
        field(&mut self.kv, value);
    }
}

/// Bytes, prefixed by their length: no two sequences of fields hash alike.
fn field(digest: &mut Sha256, bytes: &[u8]) {
    digest.update((bytes.len() as u64).to_be_bytes());
    digest.update(bytes);
}

/// A value in the one encoding of every backend: a tag, then the integer
/// (big-endian), the real's bits, or the bytes. A real with an integral value
/// an `i64` holds is that integer (SQLite stores `3.0` in a `NUMERIC` column
/// as `3`; PostgreSQL's `DOUBLE PRECISION` keeps `3.0`); every NaN is one NaN.
fn encode(digest: &mut Sha256, value: &Value) {
    match value {
        Value::Null => digest.update([0]),
        Value::Integer(i) => integer(digest, *i),
        // -2^63 to 2^63 exclusive: exactly the integral reals an i64 holds.
        Value::Real(r) if r.fract() == 0.0 && *r >= -9.223_372_036_854_776e18 && *r < 9.223_372_036_854_776e18 => {
            integer(digest, *r as i64)
        }
        Value::Real(r) => {
            digest.update([2]);
            let bits = if r.is_nan() { f64::NAN.to_bits() } else { r.to_bits() };
            digest.update(bits.to_be_bytes());
        }
        Value::Text(text) => {
            digest.update([3]);
            field(digest, text.as_bytes());
        }
        Value::Blob(bytes) => {
            digest.update([4]);
            field(digest, bytes);
        }
    }
}

fn integer(digest: &mut Sha256, i: i64) {
    digest.update([1]);
    digest.update(i.to_be_bytes());
}

fn hex(digest: Sha256) -> String {
    let bytes = digest.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reel_model::Cursor;

    fn sum(columns: &[&str], rows: &[Vec<Value>], kv: &[(&str, &[u8])]) -> ReadModelSum {
        let mut sum = Checksum::default();
        sum.checkpoint(Checkpoint { cursor: Cursor { tx: 0, id: 7 }, initialized: true });
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        sum.table("t", &columns);
        for row in rows {
            sum.row(row);
        }
        for (key, value) in kv {
            sum.kv(key, value);
        }
        sum.finish()
    }

    #[test]
    fn row_and_column_order_do_not_matter() {
        let a = sum(
            &["id", "total"],
            &[vec![Value::Text("a".into()), Value::Real(1.5)], vec![Value::Text("b".into()), Value::Null]],
            &[],
        );
        let b = sum(
            &["total", "id"],
            &[vec![Value::Null, Value::Text("b".into())], vec![Value::Real(1.5), Value::Text("a".into())]],
            &[],
        );
        assert_eq!(a, b);
        assert_eq!(a.position, 7);
        assert_eq!(a.tables[0].rows, 2);
    }

    #[test]
    fn an_integral_real_is_its_integer_and_every_other_value_counts() {
        let of = |v: Value| sum(&["v"], &[vec![v]], &[]).checksum;
        assert_eq!(of(Value::Real(3.0)), of(Value::Integer(3)));
        assert_eq!(of(Value::Real(-0.0)), of(Value::Integer(0)));
        assert_ne!(of(Value::Real(3.5)), of(Value::Integer(3)));
        assert_ne!(of(Value::Text("3".into())), of(Value::Integer(3)));
        assert_ne!(of(Value::Text("ab".into())), of(Value::Blob(b"ab".to_vec())));
        assert_ne!(of(Value::Null), of(Value::Text(String::new())));
        assert_ne!(of(Value::Real(1e300)), of(Value::Real(1e301)));
    }

    #[test]
    fn kv_entries_are_told_apart_by_their_boundaries() {
        let a = sum(&["v"], &[], &[("ab", b"c")]);
        let b = sum(&["v"], &[], &[("a", b"bc")]);
        assert_ne!(a.checksum, b.checksum);
        assert_eq!(a.kv.entries, 1);
        assert_ne!(a.kv.checksum, b.kv.checksum);
        assert_eq!(a.tables, b.tables);
    }
}
