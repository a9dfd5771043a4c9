//! The storage quota on PostgreSQL (ADR 20): which batches send
//! `reel.check_storage`, what a failure at it leaves to do.

use std::time::{Duration, Instant};

use reel_model::Cursor;

use super::client::{block_on_with_deadline, database_error};
use super::connection::PgNamespace;
use super::pipeline::{Blame, Op};
use crate::store::StoreError;

/// A writing batch checks the storage quota when the last check is this
/// old (besides the first, after a rollback, and while narrowing down): at
/// live traffic the check would be a good part of each one-event batch's
/// server time (ADR 20).
const CHECK_STORAGE_EVERY: Duration = Duration::from_millis(100);

impl PgNamespace {
    /// A batch that failed at the storage quota leaves pages to vacuum, and
    /// the batches that narrow it down each check the quota.
    pub(super) fn note_failure(&mut self, blame: Blame, error: &StoreError) {
        if let (Blame::Storage { to, .. }, StoreError::Limit(_)) = (blame, error) {
            self.vacuum_due = true;
            self.over_quota_through = self.over_quota_through.max(Some(to));
        }
    }

    /// Send the storage quota's check before the checkpoint moves to `to`,
    /// if this batch wrote and one of these holds (ADR 20): it is the
    /// connection's first writing batch or the first since a rollback; the
    /// last check is [`CHECK_STORAGE_EVERY`] old; a batch ending at `to` or
    /// after it failed at the quota, and none ending past that has committed
    /// since (the worker is narrowing down to the event that crossed it).
    pub(super) fn check_storage(&mut self, to: Cursor) -> Result<(), StoreError> {
        if self.read_only {
            return Ok(());
        }
        if self.over_quota_through.is_some_and(|through| to > through) {
            self.over_quota_through = None;
        }
        if !(self.guest_in_tx || self.kv_in_tx) {
            return Ok(());
        }
        let narrowing = self.over_quota_through.is_some();
        let due = self.storage_checked.is_none_or(|at| at.elapsed() >= CHECK_STORAGE_EVERY);
        if !(narrowing || due) {
            return Ok(());
        }
        self.storage_checked = Some(Instant::now());
        self.dispatch(Op::CheckStorage { to })
    }

    /// After a batch failed at the storage quota, give back what its rolled
    /// back rows hold at the end of the projection's own tables (reel's
    /// `_reel_kv` is not the role's to vacuum; its dead rows are reused).
    pub(super) fn vacuum(&mut self) {
        self.vacuum_due = false;
        let client = &self.client;
        let schema = self.info.schema.clone();
        let vacuumed = block_on_with_deadline(&self.handle, client, Some(self.deadline), async {
            let tables = client
                .query(
                    "SELECT format('VACUUM %I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relkind = 'r' AND pg_catalog.pg_has_role(c.relowner, 'USAGE')",
                    &[&schema],
                )
                .await
                .map_err(|e| database_error(&e))?;
            for table in tables {
                client.batch_execute(table.get::<_, &str>(0)).await.map_err(|e| database_error(&e))?;
            }
            Ok(())
        });
        if let Err(e) = vacuumed {
            tracing::warn!(namespace = %self.info.slug, "vacuum after the storage quota failed: {e}");
        }
    }
}
