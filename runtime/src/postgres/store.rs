//! Read models on PostgreSQL: one schema per namespace, written by a login
//! role of its own (the schema and `_reel_kv` stay reel's).
//!
//! A projection's transaction runs on a connection logged in as its role, so
//! its SQL cannot read `events`, reel's tables or another projection's schema,
//! and cannot escape with `SET ROLE` (it is nobody else). The checkpoint and
//! dead letters live in `reel.*`, reached only through `SECURITY DEFINER`
//! functions that act on the caller's own namespace. KV is `_reel_kv` in the
//! projection's schema (byte-ordered keys).
//!
//! Statements are pipelined: each write is sent as soon as the projection
//! issues it and the server works while the guest goes on; the worker waits
//! only at the next query or the commit, where the first error surfaces.
//!
//! This file: the store (creating, listing and dropping namespaces).

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::runtime::Handle;
use tokio_postgres::Config;

use super::client::{block_on, connect_blocking, database_error};
use super::connection::PgNamespace;
use crate::store::sql_text::quote_ident;
use crate::store::{BoundsFor, NamespaceId, Namespaces, Reader, StoreError, Writer, default_bounds};

/// How a namespace is reached.
#[derive(Debug, Clone)]
pub(super) struct NamespaceInfo {
    pub(super) slug: String,
    pub(super) schema: String,
    pub(super) role: String,
    pub(super) password: String,
}

/// Namespaces as schemas of one database.
#[derive(Clone)]
pub struct PgStore {
    config: Config,
    pool: Pool,
    handle: Handle,
    bounds: BoundsFor,
}

impl PgStore {
    /// Namespaces in the database of `config`, managed through `pool`
    /// (whose user needs CREATEROLE).
    pub fn new(config: Config, pool: Pool, handle: Handle) -> Self {
        Self { config, pool, handle, bounds: default_bounds() }
    }

    /// Bound each projection's SQL by `bounds` (the default: [`Limits`](crate::config::Limits)'s).
    pub fn with_bounds(self, bounds: BoundsFor) -> Self {
        Self { bounds, ..self }
    }

    fn admin<T>(
        &self,
        f: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        block_on(&self.handle, async {
            let mut client = self.pool.get().await.map_err(|e| StoreError::Database(e.to_string()))?;
            f(&mut client).await.map_err(|e| database_error(&e))
        })
    }

    fn info(&self, ns: &NamespaceId) -> Result<Option<NamespaceInfo>, StoreError> {
        let slug = ns.slug();
        self.admin(async |c| {
            let row = c
                .query_opt(
                    "SELECT schema_name, role_name, role_password FROM reel.namespaces WHERE namespace = $1",
                    &[&slug],
                )
                .await?;
            Ok(row.map(|r| NamespaceInfo { slug: slug.clone(), schema: r.get(0), role: r.get(1), password: r.get(2) }))
        })
    }

    /// Create the schema, role, KV table and checkpoint of `ns`.
    fn create(&self, ns: &NamespaceId) -> Result<NamespaceInfo, StoreError> {
        let slug = ns.slug();
        let suffix = random_hex(8);
        let info = NamespaceInfo {
            schema: format!("rp_{}_{suffix}", ns.name.replace('-', "_")),
            role: format!("reel_{}_{}", ns.name.replace('-', "_"), random_hex(6)),
            password: random_hex(24),
            slug: slug.clone(),
        };
        let (schema, role) = (quote_ident(&info.schema), quote_ident(&info.role));
        // `_reel_kv` leaves half of each page free, so a batch that rewrites
        // a key can update it in place (HOT: no new index entry, no bloat),
        // for a bigger table (ADR 03).
        // The schema and `_reel_kv` belong to reel's user, not to the role:
        // the projection's SQL (a function it creates runs past the text
        // checks) can create its own tables there but cannot drop, alter or
        // truncate reel's (ADR 20).
        let ddl = format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION; \
             CREATE SCHEMA {schema}; \
             GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}; \
             ALTER ROLE {role} SET search_path = {schema}; \
             GRANT USAGE ON SCHEMA reel TO {role}; \
             GRANT EXECUTE ON FUNCTION reel.owns(text), reel.read_checkpoint(text), \
                 reel.advance(text, bigint, bigint, bigint, bigint), \
                 reel.add_dead_letter(text, bigint, text, bigint, text, text, text, text, text), \
                 reel.list_dead_letters(text, bigint, integer), reel.remove_dead_letter(text, bigint) TO {role}; \
             CREATE TABLE {schema}._reel_kv (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL) \
                 WITH (fillfactor = 50); \
             GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}._reel_kv TO {role};",
            password = info.password,
        );
        let (name, version, generation) = (ns.name.clone(), ns.version.clone(), ns.generation as i32);
        self.admin(async |c| {
            let tx = c.transaction().await?;
            tx.batch_execute(CATALOG_LOCK).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO reel.namespaces (namespace, name, version, generation, schema_name, role_name, role_password) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (namespace) DO NOTHING",
                    &[&slug, &name, &version, &generation, &info.schema, &info.role, &info.password],
                )
                .await?;
            if inserted == 1 {
                tx.batch_execute(&ddl).await?;
                tx.execute("INSERT INTO reel.checkpoints (namespace) VALUES ($1)", &[&slug]).await?;
            }
            tx.commit().await
        })?;
        // Someone else may have created it first: use what is recorded.
        self.info(ns)?.ok_or_else(|| StoreError::Database(format!("namespace {ns} vanished while being created")))
    }

    /// Open `ns` (created when opening for writing); a transaction's
    /// statements are cancelled past `deadline`.
    pub fn open(
        &self,
        ns: &NamespaceId,
        read_only: bool,
        deadline: Duration,
    ) -> Result<Option<PgNamespace>, StoreError> {
        let info = match (self.info(ns)?, read_only) {
            (Some(info), _) => info,
            (None, true) => return Ok(None),
            (None, false) => self.create(ns)?,
        };
        let mut config = self.config.clone();
        let options = format!("{} {}", config.get_options().unwrap_or_default(), pinned_settings(&info.schema));
        config
            .user(&info.role)
            .password(info.password.as_bytes())
            .application_name(format!("reel {}", info.slug))
            .options(options.trim_start());
        let bounds = (self.bounds)(&ns.name);
        let mut started = false;
        if !read_only {
            // Capture's tables, and its triggers on or off (ADR 28): on once
            // capture has started (its history has a row, or had), else
            // they go on when the version reaches the head (ADR 30).
            let (schema, role, captured) = (info.schema.clone(), info.role.clone(), bounds.changes.is_some());
            started = self.admin(async |c| {
                let quoted = quote_ident(&schema);
                let exists: bool = c
                    .query_one("SELECT to_regclass(format('%I._reel_changes', $1::text)) IS NOT NULL", &[&schema])
                    .await?
                    .get(0);
                let started = captured
                    && exists
                    && c.query_one(
                        &format!(
                            "SELECT EXISTS (SELECT 1 FROM {quoted}._reel_changes) \
                             OR EXISTS (SELECT 1 FROM {quoted}._reel_changes_pruned)"
                        ),
                        &[],
                    )
                    .await?
                    .get::<_, bool>(0);
                c.execute("SELECT reel.capture_setup($1, $2, $3)", &[&schema, &role, &started]).await?;
                if captured {
                    // A snapshot looks up the rows changed since it began.
                    c.batch_execute(&format!(
                        "CREATE INDEX IF NOT EXISTS _reel_changes_key ON {quoted}._reel_changes (tbl, key)"
                    ))
                    .await?;
                }
                Ok(started)
            })?;
        }
        let client = connect_blocking(&config, &self.handle)?;
        let mut ns = PgNamespace::new(client, self.handle.clone(), info, read_only, deadline, bounds)?;
        if let Some(capture) = ns.capture.as_mut() {
            capture.started = started;
            ns.admin = Some(self.pool.clone());
        }
        ns.watch_tables()?;
        Ok(Some(ns))
    }
}

impl Namespaces for PgStore {
    fn open_writer(&self, ns: &NamespaceId, deadline: Duration) -> Result<Box<dyn Writer>, StoreError> {
        Ok(Box::new(self.open(ns, false, deadline)?.expect("created when opening for writing")))
    }

    fn open_reader(&self, ns: &NamespaceId, deadline: Duration) -> Result<Option<Box<dyn Reader>>, StoreError> {
        Ok(self.open(ns, true, deadline)?.map(|n| Box::new(n) as Box<dyn Reader>))
    }

    /// Whether `ns` exists.
    fn exists(&self, ns: &NamespaceId) -> bool {
        matches!(self.info(ns), Ok(Some(_)))
    }

    /// Drop the schema and role of `ns` and its rows in `reel.*`.
    fn drop_namespace(&self, ns: &NamespaceId) -> Result<(), StoreError> {
        let Some(info) = self.info(ns)? else { return Ok(()) };
        let (schema, role) = (quote_ident(&info.schema), quote_ident(&info.role));
        let slug = info.slug;
        self.admin(async |c| {
            c.batch_execute(&format!(
                "{CATALOG_LOCK}; \
                 DROP SCHEMA IF EXISTS {schema} CASCADE; \
                 REVOKE ALL ON SCHEMA reel FROM {role}; \
                 REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reel FROM {role}"
            ))
            .await?;
            c.execute("DELETE FROM reel.namespaces WHERE namespace = $1", &[&slug]).await?;
            c.execute("DELETE FROM reel.active WHERE namespace = $1", &[&slug]).await?;
            Ok(())
        })?;
        // Its connections may still be closing; a role with sessions cannot go yet.
        for attempt in 0..20 {
            let role = role.clone();
            match self.admin(async |c| c.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 19 => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Ok(())
    }

    /// Namespaces recorded in `reel.namespaces`.
    fn namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
        self.admin(async |c| {
            let rows = c.query("SELECT namespace FROM reel.namespaces ORDER BY namespace", &[]).await?;
            Ok(rows.iter().filter_map(|r| NamespaceId::from_slug(r.get(0))).collect())
        })
    }

    /// The namespace serving reads of each projection.
    fn active_namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
        self.admin(async |c| {
            let rows = c.query("SELECT namespace FROM reel.active ORDER BY name", &[]).await?;
            Ok(rows.iter().filter_map(|r| NamespaceId::from_slug(r.get(0))).collect())
        })
    }

    /// Record `ns` as serving reads.
    fn set_active(&self, ns: &NamespaceId) -> Result<(), StoreError> {
        let (name, slug) = (ns.name.clone(), ns.slug());
        self.admin(async |c| {
            c.execute(
                "INSERT INTO reel.active (name, namespace) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET namespace = excluded.namespace",
                &[&name, &slug],
            )
            .await
            .map(drop)
        })
    }

    /// Forget a projection.
    fn forget(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.admin(async |c| c.execute("DELETE FROM reel.active WHERE name = $1", &[&name]).await.map(drop))
    }

    /// Record the prefix `reel.emit` checks, and grant it to the role: no
    /// other namespace's role may execute it (ADR 23).
    fn declare_emits(&self, ns: &NamespaceId, prefix: &str) -> Result<(), StoreError> {
        let Some(info) = self.info(ns)? else {
            return Err(StoreError::Database(format!("namespace {ns} does not exist")));
        };
        let (slug, prefix) = (info.slug, prefix.to_owned());
        let grant = format!(
            "GRANT EXECUTE ON FUNCTION reel.emit(text, bigint[], bigint[], integer[], integer[], text[], text[], text[], text[], jsonb) TO {}",
            quote_ident(&info.role)
        );
        self.admin(async |c| {
            let tx = c.transaction().await?;
            tx.batch_execute(CATALOG_LOCK).await?;
            tx.execute("UPDATE reel.namespaces SET emit_prefix = $2 WHERE namespace = $1", &[&slug, &prefix]).await?;
            tx.batch_execute(&grant).await?;
            tx.commit().await
        })
    }
}

/// Settings a namespace's connections open with, as startup options: they
/// outrank the role's own defaults, which its SQL may change (`ALTER ROLE
/// CURRENT_USER SET ...`), and `RESET ALL` goes back to them (ADR 20).
fn pinned_settings(schema: &str) -> String {
    // Options split at spaces (a backslash escapes one); schemas are made
    // of letters, digits and `_` (`create`).
    format!(
        "-c search_path={} -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0 \
         -c default_transaction_read_only=off -c default_transaction_isolation=read\\ committed",
        quote_ident(schema)
    )
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creating and dropping namespaces grant and revoke on the same catalog rows
/// (schema `reel` and its functions); run at once, PostgreSQL fails one with
/// "XX000: tuple concurrently updated" (seen when several projections start
/// together), so each takes this lock first. (The two-key form: apart from
/// the one-key locks that claim namespaces.)
const CATALOG_LOCK: &str = "SELECT pg_advisory_xact_lock(1919251820, 1)";
