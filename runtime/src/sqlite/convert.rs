//! rusqlite's errors and values as reel's.

use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use reel_model::Value;

use crate::store::StoreError;

/// An error of reel's own statements. The deadline interrupts them too (a
/// batch's KV writes and checkpoint, a table read over HTTP): that is the
/// limit, not an outage of the database.
pub(super) fn db(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(err, _)
            if matches!(err.code, rusqlite::ErrorCode::OperationInterrupted | rusqlite::ErrorCode::TooBig) =>
        {
            sql_error(e)
        }
        e => StoreError::Database(e.to_string()),
    }
}

/// A projection statement's error: the database's code and message.
pub(super) fn sql_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::OperationInterrupted => {
            StoreError::Deadline("the statement ran past its deadline and was interrupted".into())
        }
        rusqlite::Error::SqliteFailure(err, message) => StoreError::Sql {
            code: result_code_name(err.extended_code),
            message: message.unwrap_or_else(|| err.to_string()),
        },
        // What SQLite refused while preparing (no such table or column, a
        // syntax error): rusqlite names its own variant, SQLite's code is in it.
        rusqlite::Error::SqlInputError { error, msg, .. } => {
            StoreError::Sql { code: result_code_name(error.extended_code), message: msg }
        }
        rusqlite::Error::MultipleStatement => {
            StoreError::Refused("one statement per call: split the text at `;` into several calls".into())
        }
        other => StoreError::Sql { code: "SQLITE_MISUSE".into(), message: other.to_string() },
    }
}

pub(super) fn result_code_name(code: i32) -> String {
    use rusqlite::ffi::*;
    let name = match code {
        SQLITE_CONSTRAINT_UNIQUE => "SQLITE_CONSTRAINT_UNIQUE",
        SQLITE_CONSTRAINT_PRIMARYKEY => "SQLITE_CONSTRAINT_PRIMARYKEY",
        SQLITE_CONSTRAINT_NOTNULL => "SQLITE_CONSTRAINT_NOTNULL",
        SQLITE_CONSTRAINT_FOREIGNKEY => "SQLITE_CONSTRAINT_FOREIGNKEY",
        SQLITE_CONSTRAINT_CHECK => "SQLITE_CONSTRAINT_CHECK",
        SQLITE_AUTH => "SQLITE_AUTH",
        SQLITE_READONLY => "SQLITE_READONLY",
        SQLITE_BUSY => "SQLITE_BUSY",
        SQLITE_FULL => "SQLITE_FULL",
        SQLITE_TOOBIG => "SQLITE_TOOBIG",
        SQLITE_MISMATCH => "SQLITE_MISMATCH",
        SQLITE_RANGE => "SQLITE_RANGE",
        SQLITE_ERROR => "SQLITE_ERROR",
        _ => return format!("SQLITE_{code}"),
    };
    name.to_owned()
}

/// A namespace's switch to the projection's rules while its statement runs.
#[derive(Debug)]
pub(super) struct Guest {
    /// The authorizer applies (read by its callback).
    pub(super) on: AtomicBool,
    /// Largest string or blob the statement may make: SQLite allocates it in
    /// reel's process, outside the module's memory cap (ADR 20).
    pub(super) value_bytes: i32,
    /// The namespace's changes are captured: after a schema change the
    /// statements' runner watches new tables (ADR 28).
    pub(super) capture: AtomicBool,
}

impl Guest {
    pub(super) fn new(value_bytes: usize) -> Self {
        Self {
            on: AtomicBool::new(false),
            value_bytes: i32::try_from(value_bytes).unwrap_or(i32::MAX),
            capture: AtomicBool::new(false),
        }
    }

    /// Run `f` on `conn` with values bounded (as before, after).
    pub(super) fn bounded<T>(
        &self,
        conn: &Connection,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let length = rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH;
        let before = conn.set_limit(length, self.value_bytes).map_err(db)?;
        let result = f();
        conn.set_limit(length, before).map_err(db)?;
        result.map_err(|e| match e {
            StoreError::Sql { code, .. } if code == "SQLITE_TOOBIG" => StoreError::Limit(format!(
                "a string or blob over the {} MiB limit on SQL values (sql-value-mib)",
                self.value_bytes >> 20
            )),
            e => e,
        })
    }
}

/// Run `f` on `conn` as a projection statement: `guest` switches the
/// authorizer on and bounds values for the time of it (on whichever thread
/// holds `conn`).
pub(super) fn as_guest<T>(
    conn: &Connection,
    guest: &Guest,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    guest.bounded(conn, || {
        guest.on.store(true, Ordering::Relaxed);
        let result = f(conn);
        guest.on.store(false, Ordering::Relaxed);
        result.map_err(sql_error)
    })
}

/// A [`Value`] as a SQLite parameter.
pub(super) struct Param<'a>(pub(super) &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

pub(super) fn to_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(crate::text::lossy(t)),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}
