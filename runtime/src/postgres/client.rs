//! Connections shared by the event log and the namespaces: connecting from
//! worker threads, deadlines enforced by cancel requests, error
//! classification.

use std::time::Duration;

use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::store::StoreError;

/// Connect with `config`; the connection is driven by a task on `handle`'s
/// runtime, so the client can be used from any thread.
pub async fn connect(config: &Config, handle: &Handle) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    handle.spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// Wait for `future` from synchronous code: a worker thread, a blocking
/// task, or (through `block_in_place`) a runtime thread.
pub fn block_on<F: std::future::Future>(handle: &Handle, future: F) -> F::Output {
    match Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(|| handle.block_on(future)),
        Err(_) => handle.block_on(future),
    }
}

/// Connect from synchronous code.
pub fn connect_blocking(config: &Config, handle: &Handle) -> Result<Client, StoreError> {
    let config = config.clone();
    let spawner = handle.clone();
    block_on(handle, async move { connect(&config, &spawner).await })
        .map_err(|e| StoreError::Database(format!("connecting to PostgreSQL: {}", with_cause(&e))))
}

/// A client error with its cause: "error connecting to server" says little
/// without "Connection refused (os error 111)".
pub fn with_cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) if e.as_db_error().is_none() => format!("{e}: {cause}"),
        _ => e.to_string(),
    }
}

/// Run `future` (a request on `client`) with a deadline: past it, the
/// running statement is cancelled on the server and the call fails with
/// [`StoreError::Deadline`].
pub fn block_on_with_deadline<T>(
    handle: &Handle,
    client: &Client,
    deadline: Option<Duration>,
    future: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let Some(deadline) = deadline else { return block_on(handle, future) };
    match block_on_cancelling_past(handle, client, deadline, future) {
        (result, false) => result,
        (_, true) => Err(StoreError::Deadline("the SQL ran past its deadline and was cancelled".into())),
    }
}

/// Run `future` (a request on `client`); past `deadline`, cancel what the
/// server runs and still wait for the future. Its output, and whether the
/// deadline passed.
pub fn block_on_cancelling_past<T>(
    handle: &Handle,
    client: &Client,
    deadline: Duration,
    future: impl std::future::Future<Output = T>,
) -> (T, bool) {
    let cancel = client.cancel_token();
    block_on(handle, async move {
        tokio::pin!(future);
        tokio::select! {
            output = &mut future => (output, false),
            () = tokio::time::sleep(deadline) => {
                let _ = cancel.cancel_query(NoTls).await;
                (future.await, true)
            }
        }
    })
}

/// Classify an error of a statement a projection sent: its own fault (the
/// database refused it) or the database's (connection, resources).
pub fn statement_error(error: &tokio_postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db) => {
            let code = db.code();
            let class = &code.code()[..2];
            let transient = matches!(class, "08" | "53" | "57" | "58" | "XX")
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED;
            if *code == SqlState::QUERY_CANCELED {
                StoreError::Deadline("a statement was cancelled (deadline)".into())
            } else if transient {
                StoreError::Database(format!("{}: {}", code.code(), db.message()))
            } else {
                StoreError::Sql { code: code.code().to_owned(), message: db.message().to_owned() }
            }
        }
        None => StoreError::Database(error.to_string()),
    }
}

/// Any error of reel's own statements: the database's fault.
pub fn database_error(error: &tokio_postgres::Error) -> StoreError {
    StoreError::Database(match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    })
}
