//! One version of a projection: its namespace, its code (if loaded), its
//! worker, and pools of read connections and query instances.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::host::Guest;
use crate::modules::Program;
use crate::store::{NamespaceId, Reader, Store};
use crate::worker::{self, Control, State, Status, WorkerContext, WorkerHandle};

/// Idle items a pool keeps, and how many may be in use at once.
pub const POOL_SIZE: usize = 8;

/// Reusable items (read connections, query instances).
pub struct Pool<T> {
    items: Mutex<Vec<T>>,
    /// Turns to use an item, `POOL_SIZE` of them: a burst of reads (or of
    /// queries, each an instance with a connection of its own) queues for
    /// one rather than opening a connection each (64 concurrent reads on
    /// PostgreSQL opened 64 connections and met the server's limit).
    turns: Arc<tokio::sync::Semaphore>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self { items: Mutex::new(Vec::new()), turns: Arc::new(tokio::sync::Semaphore::new(POOL_SIZE)) }
    }
}

impl<T> Pool<T> {
    /// Wait for a turn to use an item; it ends when the permit drops.
    /// `None` once the pool is retired: its version no longer serves.
    pub async fn turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.turns).acquire_owned().await.ok()
    }

    /// Wait for the turns taken to end, then refuse new ones, and drop
    /// every idle item: after this nothing uses the version's storage.
    pub async fn retire(&self) {
        if let Ok(all) = self.turns.acquire_many(POOL_SIZE as u32).await {
            all.forget();
        }
        self.turns.close();
        self.clear();
    }

    /// An idle item, if any.
    pub fn take(&self) -> Option<T> {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Return an item for reuse.
    pub fn put(&self, item: T) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if items.len() < POOL_SIZE {
            items.push(item);
        }
    }

    /// Drop every idle item.
    pub fn clear(&self) {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A projection version.
pub struct Deployment {
    pub(super) ns: NamespaceId,
    /// `None` when its module is not loaded (the read model stays readable).
    pub(super) program: Option<Program>,
    pub(super) file: Option<PathBuf>,
    pub(super) worker: Option<WorkerHandle>,
    pub(super) status: Arc<Status>,
    /// Why the latest module file for it could not be used.
    pub(super) module_error: Option<String>,
    pub(super) readers: Arc<Pool<Box<dyn Reader>>>,
    pub(super) queries: Arc<Pool<Box<dyn Guest>>>,
}

/// What the API needs of a deployment, without holding the registry lock.
#[derive(Clone)]
pub struct View {
    /// Its namespace.
    pub ns: NamespaceId,
    /// Its code, when loaded.
    pub program: Option<Program>,
    /// The module file.
    pub file: Option<PathBuf>,
    /// Its status.
    pub status: Arc<Status>,
    /// Why its latest module file was refused.
    pub module_error: Option<String>,
    /// Read connections.
    pub readers: Arc<Pool<Box<dyn Reader>>>,
    /// Query instances.
    pub queries: Arc<Pool<Box<dyn Guest>>>,
}

impl Deployment {
    /// Start a worker running `program` in `ns`.
    pub(super) fn start(ctx: &WorkerContext, ns: NamespaceId, program: Program, file: Option<PathBuf>) -> Self {
        let worker = worker::spawn(ctx.clone(), ns.clone(), program.clone());
        Self {
            status: Arc::clone(&worker.status),
            ns,
            program: Some(program),
            file,
            worker: Some(worker),
            module_error: None,
            readers: Arc::default(),
            queries: Arc::default(),
        }
    }

    /// A namespace with no code loaded: readable, not running.
    pub(super) fn unloaded(store: &Store, ns: NamespaceId) -> Self {
        let cursor = store
            .open_reader(&ns, std::time::Duration::from_secs(10))
            .ok()
            .flatten()
            .and_then(|mut reader| reader.checkpoint().ok())
            .map(|c| c.cursor)
            .unwrap_or_default();
        let status = Arc::new(Status::new(cursor));
        status.set_state(State::Unloaded);
        Self {
            ns,
            program: None,
            file: None,
            worker: None,
            status,
            module_error: None,
            readers: Arc::default(),
            queries: Arc::default(),
        }
    }

    /// New code of the same version: swapped in at the next batch boundary
    /// (or started, if nothing was running).
    pub(super) fn swap(&mut self, ctx: &WorkerContext, program: Program, file: Option<PathBuf>) {
        match &self.worker {
            Some(worker) => worker.send(Control::Swap(program.clone())),
            None => {
                let worker = worker::spawn(ctx.clone(), self.ns.clone(), program.clone());
                self.status = Arc::clone(&worker.status);
                self.worker = Some(worker);
            }
        }
        self.program = Some(program);
        self.file = file;
        self.module_error = None;
        self.queries.clear();
    }

    /// Stop running (the caller stops the returned worker); keep the data.
    pub(super) fn unload(&mut self) -> Option<WorkerHandle> {
        self.program = None;
        self.queries.clear();
        let worker = self.worker.take();
        let status = Arc::new(Status::new(self.status.cursor()));
        status.set_state(State::Unloaded);
        self.status = status;
        worker
    }

    pub(super) fn view(&self) -> View {
        View {
            ns: self.ns.clone(),
            program: self.program.clone(),
            file: self.file.clone(),
            status: Arc::clone(&self.status),
            module_error: self.module_error.clone(),
            readers: Arc::clone(&self.readers),
            queries: Arc::clone(&self.queries),
        }
    }
}
