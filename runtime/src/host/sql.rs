//! `reel:projection/sql` for component instances.

use super::bindings::reel::projection::sql::{Host, Rows, SqlError, Value};
use super::instance::InstanceState;

fn from_wit(value: Value) -> reel_model::Value {
    match value {
        Value::Null => reel_model::Value::Null,
        Value::Integer(i) => reel_model::Value::Integer(i),
        Value::Real(f) => reel_model::Value::Real(f),
        Value::Text(s) => reel_model::Value::Text(s),
        Value::Blob(b) => reel_model::Value::Blob(b),
    }
}

fn to_wit(value: reel_model::Value) -> Value {
    match value {
        reel_model::Value::Null => Value::Null,
        reel_model::Value::Integer(i) => Value::Integer(i),
        reel_model::Value::Real(f) => Value::Real(f),
        reel_model::Value::Text(s) => Value::Text(s),
        reel_model::Value::Blob(b) => Value::Blob(b),
    }
}

impl Host for InstanceState {
    fn execute(&mut self, statement: String, params: Vec<Value>) -> wasmtime::Result<()> {
        Ok(self.caps()?.sql_execute(&statement, params.into_iter().map(from_wit).collect())?)
    }

    fn query(&mut self, statement: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, SqlError>> {
        let result = self.caps()?.sql_query(&statement, params.into_iter().map(from_wit).collect())?;
        Ok(match result {
            Ok(rows) => Ok(Rows {
                columns: rows.columns,
                rows: rows.rows.into_iter().map(|row| row.into_iter().map(to_wit).collect()).collect(),
            }),
            Err(e) => Err(SqlError { code: e.code, message: e.message }),
        })
    }

    fn dialect(&mut self) -> wasmtime::Result<String> {
        Ok(self.caps()?.sql_dialect().to_owned())
    }
}
