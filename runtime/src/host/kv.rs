//! `reel:projection/kv` for component instances.

use super::bindings::reel::projection::kv::{Entry, Host};
use super::instance::InstanceState;

impl Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.caps()?.kv_get(&key)?)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        Ok(self.caps()?.kv_set(key, value)?)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        Ok(self.caps()?.kv_delete(key)?)
    }

    fn scan(&mut self, prefix: String, after: Option<String>, limit: u32) -> wasmtime::Result<Vec<Entry>> {
        let entries = self.caps()?.kv_scan(&prefix, after.as_deref(), limit)?;
        Ok(entries.into_iter().map(|(key, value)| Entry { key, value }).collect())
    }
}
