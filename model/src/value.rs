//! Values crossing the `sql` interface: parameters, columns, rows.

use crate::{Error, Result};

/// A SQL parameter or column value (SQLite's storage classes; PostgreSQL values
/// map onto them).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (also booleans, as 0 and 1).
    Integer(i64),
    /// A double.
    Real(f64),
    /// Text (also JSON, timestamps, UUIDs, numerics on PostgreSQL).
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

macro_rules! from_integer {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
from_integer!(i8, i16, i32, i64, u8, u16, u32, bool);

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Real(f64::from(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Conversion from a column [`Value`] into a Rust type.
pub trait FromValue: Sized {
    /// Convert, or say why not.
    fn from_value(value: &Value) -> Result<Self>;
}

fn mismatch<T>(wanted: &str, value: &Value) -> Result<T> {
    Err(Error::Failed(format!("expected {wanted}, found {value:?}")))
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Integer(v) => Ok(*v),
            other => mismatch("an integer", other),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Real(v) => Ok(*v),
            // Integral values in a REAL column may come back as integers.
            Value::Integer(v) => Ok(*v as f64),
            other => mismatch("a real", other),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self> {
        i64::from_value(value).map(|v| v != 0)
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Text(v) => Ok(v.clone()),
            other => mismatch("text", other),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Blob(v) => Ok(v.clone()),
            other => mismatch("a blob", other),
        }
    }
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self> {
        Ok(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

impl Value {
    /// The value as JSON: integers and reals as numbers, text as a string,
    /// blobs as an array of bytes.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(v) => (*v).into(),
            Value::Real(v) => serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, Into::into),
            Value::Text(v) => v.as_str().into(),
            Value::Blob(v) => v.as_slice().into(),
        }
    }
}

/// The rows a query returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// Column names, in select order.
    pub columns: Vec<String>,
    /// Each row's values, in column order.
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the query returned no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Iterate the rows.
    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|values| Row { columns: &self.columns, values })
    }

    /// The first row, if any.
    pub fn first(&self) -> Option<Row<'_>> {
        self.iter().next()
    }

    /// Rows as JSON objects keyed by column name.
    pub fn to_json(&self) -> serde_json::Value {
        self.iter().map(|row| row.to_json()).collect()
    }
}

/// One row of [`Rows`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

impl<'a> Row<'a> {
    /// The value of column `name`, converted.
    pub fn get<T: FromValue>(&self, name: &str) -> Result<T> {
        let index = self
            .columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| Error::Failed(format!("no column `{name}` in the result")))?;
        T::from_value(&self.values[index]).map_err(|e| Error::Failed(format!("column `{name}`: {e}")))
    }

    /// The value at `index`, converted.
    pub fn get_at<T: FromValue>(&self, index: usize) -> Result<T> {
        let value = self.values.get(index).ok_or_else(|| Error::Failed(format!("no column {index} in the result")))?;
        T::from_value(value)
    }

    /// The raw values.
    pub fn values(&self) -> &'a [Value] {
        self.values
    }

    /// The row as a JSON object keyed by column name.
    pub fn to_json(&self) -> serde_json::Value {
        let map = self.columns.iter().zip(self.values).map(|(c, v)| (c.clone(), v.to_json())).collect();
        serde_json::Value::Object(map)
    }
}
