//! Values between projections and PostgreSQL.
//!
//! Parameters are sent in PostgreSQL's *text* format, so the server parses
//! them with the type it inferred for the placeholder: an integer can fill a
//! `BIGINT`, `NUMERIC` or `TEXT` column, a string a `JSONB` or `TIMESTAMPTZ`
//! one, as on SQLite. Bytes go in binary to `BYTEA`. Results arrive in binary
//! and are mapped onto the five value kinds.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};

use reel_model::Value;
use reel_model::time::format_micros;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Why `value` cannot fill a parameter of type `ty`: a blob goes in binary,
/// to `BYTEA` alone; text goes as text the server parses, and the server's
/// text holds no NUL character (refused here, by reel, rather than by the
/// server in its own words).
pub fn unfit(value: &Value, ty: &Type) -> Option<String> {
    match value {
        Value::Blob(_) if *ty != Type::BYTEA => Some(format!("a blob cannot fill a parameter of type {ty}")),
        Value::Text(t) if t.contains('\0') => {
            Some("text with a NUL character (\\u0000), which PostgreSQL cannot store".to_owned())
        }
        _ => None,
    }
}

/// A [`Value`] as a PostgreSQL parameter.
#[derive(Debug)]
pub struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if let Some(why) = unfit(self.0, ty) {
            return Err(why.into());
        }
        match self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Value::Real(f) => out.extend_from_slice(real_text(*f).as_bytes()),
            Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            Value::Blob(b) => out.extend_from_slice(b),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, ty: &Type) -> Format {
        if matches!(self.0, Value::Blob(_)) && *ty == Type::BYTEA { Format::Binary } else { Format::Text }
    }

    to_sql_checked!();
}

/// Append `value` as the SQL literal that fills a parameter as [`Param`]
/// would: the same text in an untyped string constant (`E'...'`, read the
/// same whatever `standard_conforming_strings` says), which the server
/// parses with the parameter's type; a blob in `BYTEA`'s hex form. `false`
/// (nothing appended) for text with a NUL, which a query string cannot carry.
pub fn write_literal(value: &Value, out: &mut String) -> bool {
    use std::fmt::Write;
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Integer(i) => {
            let _ = write!(out, "'{i}'");
        }
        Value::Real(f) => {
            let _ = write!(out, "'{}'", real_text(*f));
        }
        Value::Text(s) if s.contains('\0') => return false,
        Value::Text(s) => {
            out.push_str("E'");
            if s.contains(['\\', '\'']) {
                out.push_str(&s.replace('\\', "\\\\").replace('\'', "''"));
            } else {
                out.push_str(s);
            }
            out.push('\'');
        }
        Value::Blob(b) => {
            out.push_str("E'\\\\x");
            for byte in b.iter() {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('\'');
        }
    }
    true
}

fn real_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        f.to_string()
    }
}

/// A one-dimensional `text[]` or `bytea[]` parameter, encoded in binary as
/// its elements are pushed: a KV batch's tens of thousands of keys and
/// values are copied into one buffer instead of each into an owned copy.
#[derive(Debug)]
pub struct ArrayParam {
    element: Type,
    len: i32,
    bytes: Vec<u8>,
}

impl ArrayParam {
    /// An empty array of `element` (`TEXT`, `BYTEA`, or a number type whose
    /// elements are pushed in its binary form, such as `INT8` big-endian).
    pub fn new(element: Type) -> Self {
        Self { element, len: 0, bytes: Vec::new() }
    }

    /// Append an element: for `TEXT`, UTF-8 text; for a number, its
    /// big-endian bytes.
    pub fn push(&mut self, element: &[u8]) {
        let len = i32::try_from(element.len()).expect("an array element under 2 GiB");
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(element);
        self.len += 1;
    }

    /// Whether it can fill a parameter of type `ty` (what
    /// [`ToSql::to_sql_checked`] would check before sending it).
    pub fn fits(&self, ty: &Type) -> bool {
        <Self as ToSql>::accepts(ty) && *ty.kind() == tokio_postgres::types::Kind::Array(self.element.clone())
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl ToSql for ArrayParam {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        if !self.fits(ty) {
            return Err(format!("an array of {} cannot fill a parameter of type {ty}", self.element).into());
        }
        // array_recv: dimensions, has-nulls flag, element type, then per
        // dimension its length and lower bound, then length-prefixed elements.
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&self.element.oid().to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&self.bytes);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TEXT_ARRAY | Type::BYTEA_ARRAY | Type::INT8_ARRAY | Type::INT4_ARRAY)
    }

    to_sql_checked!();
}

/// A column's raw bytes, whatever its type.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column `index` of `row` as a [`Value`], or why it cannot be one.
pub fn column(row: &tokio_postgres::Row, index: usize) -> Result<Value, String> {
    let column = &row.columns()[index];
    let ty = column.type_();
    let Raw(raw) = row.try_get::<_, Raw<'_>>(index).map_err(|e| e.to_string())?;
    let Some(raw) = raw else { return Ok(Value::Null) };
    decode(ty, raw).ok_or_else(|| {
        format!(
            "column `{}` has type {ty}, which reel cannot return; cast it, e.g. `{}::text`",
            column.name(),
            column.name()
        )
    })
}

fn be<const N: usize>(raw: &[u8]) -> Option<[u8; N]> {
    raw.try_into().ok()
}

fn decode(ty: &Type, raw: &[u8]) -> Option<Value> {
    let text = |bytes: &[u8]| Value::Text(crate::text::lossy(bytes));
    Some(match *ty {
        Type::BOOL => Value::Integer(i64::from(*raw.first()? != 0)),
        Type::INT2 => Value::Integer(i64::from(i16::from_be_bytes(be(raw)?))),
        Type::INT4 => Value::Integer(i64::from(i32::from_be_bytes(be(raw)?))),
        Type::INT8 => Value::Integer(i64::from_be_bytes(be(raw)?)),
        Type::OID => Value::Integer(i64::from(u32::from_be_bytes(be(raw)?))),
        Type::FLOAT4 => Value::Real(f64::from(f32::from_be_bytes(be(raw)?))),
        Type::FLOAT8 => Value::Real(f64::from_be_bytes(be(raw)?)),
        Type::NUMERIC => Value::Text(numeric(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON | Type::XML => text(raw),
        Type::JSONB => text(raw.strip_prefix(&[1])?),
        Type::BYTEA => Value::Blob(raw.to_vec()),
        Type::TIMESTAMPTZ | Type::TIMESTAMP => {
            let micros = i64::from_be_bytes(be(raw)?);
            Value::Text(match micros {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                m => format_micros(m + PG_EPOCH_MICROS),
            })
        }
        Type::DATE => {
            let days = i32::from_be_bytes(be(raw)?);
            let stamp = format_micros((i64::from(days) * 86_400_000_000) + PG_EPOCH_MICROS);
            Value::Text(stamp[..10].to_owned())
        }
        Type::UUID => {
            let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if h.len() != 32 {
                return None;
            }
            Value::Text(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
        }
        _ => return None,
    })
}

/// PostgreSQL's binary NUMERIC as exact decimal text.
fn numeric(raw: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> { Some(i16::from_be_bytes(be(raw.get(i * 2..i * 2 + 2)?)?)) };
    let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(1)?, word(2)? as u16, word(3)? as usize);
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits).map(|i| word(4 + i)).collect::<Option<_>>()?;
    let mut int = String::new();
    for i in 0..=weight.max(0) {
        let d = if weight >= 0 { digits.get(i as usize).copied().unwrap_or(0) } else { 0 };
        if int.is_empty() { int.push_str(&d.to_string()) } else { int.push_str(&format!("{d:04}")) }
    }
    if weight < 0 {
        int = "0".into();
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        let d = if i >= 0 { digits.get(i as usize).copied().unwrap_or(0) } else { 0 };
        frac.push_str(&format!("{d:04}"));
        i += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") })
}

/// The size of a column's value as it came from the server, whatever its type.
pub(super) struct RawSize(pub(super) usize);

impl<'a> tokio_postgres::types::FromSql<'a> for RawSize {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.len()))
    }

    fn from_sql_null(_: &tokio_postgres::types::Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(0))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale].iter().chain(digits) {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_exactly() {
        assert_eq!(numeric(&numeric_bytes(2, 0, 0, 2, &[12, 3400])).unwrap(), "12.34");
        assert_eq!(numeric(&numeric_bytes(2, 1, 0x4000, 0, &[1, 2])).unwrap(), "-10002");
        assert_eq!(numeric(&numeric_bytes(1, -1, 0, 3, &[500])).unwrap(), "0.050");
        assert_eq!(numeric(&numeric_bytes(0, 0, 0, 0, &[])).unwrap(), "0");
        assert_eq!(numeric(&numeric_bytes(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
    }

    #[test]
    fn reals_are_sent_as_text_postgres_parses() {
        assert_eq!(real_text(0.1), "0.1");
        assert_eq!(real_text(f64::INFINITY), "Infinity");
        assert_eq!(real_text(f64::NAN), "NaN");
    }
}
