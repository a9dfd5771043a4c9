//! The namespace of a replay from a record: no database. Every answer the
//! guest gets comes from the record (the tape, in the capabilities); this
//! only takes the writes a replay makes and drops them.

use reel_model::{Cursor, DeadLetter, Event, Rows, Value};

use crate::store::{
    ChangePage, ChangeReads, Checkpoint, Commits, DeadLetterReads, DeadLetterWrites, DumpSink, Dumps, KvReads, KvWrite,
    KvWrites, Snapshot, SnapshotAt, SnapshotStep, SqlReads, SqlWrites, StoreError, TableRead, TableReads,
};

/// A namespace that answers nothing and keeps nothing.
pub struct Detached {
    /// What `sql.dialect` says: the recorded database's.
    pub dialect: &'static str,
}

fn none<T>() -> Result<T, StoreError> {
    Err(StoreError::Database("a replay from a record has no database: this call was not recorded".into()))
}

impl Snapshot for Detached {
    fn checkpoint(&mut self) -> Result<Checkpoint, StoreError> {
        Ok(Checkpoint::default())
    }
    fn begin(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn rollback(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl KvReads for Detached {
    fn kv_get(&mut self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        none()
    }
    fn kv_scan(&mut self, _: &str, _: Option<&str>, _: usize) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        none()
    }
}

impl SqlReads for Detached {
    fn dialect(&self) -> &'static str {
        self.dialect
    }
    fn query(&mut self, _: &str, _: Vec<Value>, _: usize) -> Result<Rows, StoreError> {
        none()
    }
}

impl TableReads for Detached {
    fn read_table(&mut self, _: &TableRead) -> Result<Rows, StoreError> {
        none()
    }
    fn tables(&mut self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

impl DeadLetterReads for Detached {
    fn dead_letters(&mut self, _: i64, _: usize) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(Vec::new())
    }
}

impl Dumps for Detached {
    fn dump(&mut self, _: &mut dyn DumpSink) -> Result<(), StoreError> {
        none()
    }
}

impl ChangeReads for Detached {
    fn changes(&mut self, _: i64, _: usize) -> Result<ChangePage, StoreError> {
        Ok(ChangePage::default())
    }
    fn snapshot(&mut self, _: &SnapshotAt, _: usize) -> Result<SnapshotStep, StoreError> {
        none()
    }
}

impl SqlWrites for Detached {
    fn execute(&mut self, _: &str, _: Vec<Value>) -> Result<(), StoreError> {
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Commits for Detached {
    fn commit(&mut self, _: Cursor, _: Cursor) -> Result<(), StoreError> {
        Ok(())
    }
}

impl KvWrites for Detached {
    fn kv_write(&mut self, _: &[KvWrite<'_>]) -> Result<(), StoreError> {
        Ok(())
    }
    fn kv_is_empty(&mut self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

impl DeadLetterWrites for Detached {
    fn dead_letter(&mut self, _: &Event, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove_dead_letter(&mut self, _: i64) -> Result<bool, StoreError> {
        Ok(false)
    }
}
