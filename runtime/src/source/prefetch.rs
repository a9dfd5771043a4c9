//! Reading the next batch while the current one is applied.
//!
//! When a read comes back full (the projection is catching up), the reader
//! thread immediately reads the batch after it, so reading the events table
//! overlaps with the guest and the writes. If the worker then asks for
//! something else (after a failure, a partial commit), the speculative
//! batch is dropped and the read happens as asked; if it asks for more
//! events than were read ahead, only the rest is read.

use std::sync::mpsc;
use std::thread::JoinHandle;

use reel_model::Cursor;

use super::{Batch, EventReader, Filter, SourceError};

type Request = (Cursor, Filter, usize);
type Answer = (Request, Result<Batch, SourceError>);

/// An [`EventReader`] that reads ahead on a thread of its own.
pub struct Prefetcher {
    requests: Option<mpsc::Sender<Request>>,
    answers: mpsc::Receiver<Answer>,
    /// The request the thread is working on (or has answered), not yet taken.
    ahead: Option<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Read ahead with `reader`.
    pub fn new(mut reader: Box<dyn EventReader>) -> Self {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (answer, answers) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("reel-prefetch".into())
            .spawn(move || {
                for request in incoming {
                    let (after, filter, limit) = &request;
                    let batch = reader.read_batch(*after, filter, *limit);
                    if answer.send((request, batch)).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning a prefetch thread");
        Self { requests: Some(requests), answers, ahead: None, thread: Some(thread) }
    }

    fn ask(&mut self, request: Request) -> Result<(), SourceError> {
        let requests = self.requests.as_ref().expect("open until dropped");
        requests.send(request).map_err(|_| SourceError::Internal("the prefetch thread died".into()))
    }

    fn answer(&mut self) -> Result<Answer, SourceError> {
        self.answers.recv().map_err(|_| SourceError::Internal("the prefetch thread died".into()))
    }
}

impl EventReader for Prefetcher {
    fn read_batch(&mut self, after: Cursor, filter: &Filter, limit: usize) -> Result<Batch, SourceError> {
        let wanted = (after, filter.clone(), limit);
        let mut batch = None;
        if let Some(ahead) = self.ahead.take() {
            let (request, result) = self.answer()?;
            debug_assert!(request == ahead);
            // The read ahead serves if it started where asked, with the same
            // filter. The worker resizes its batches: past a smaller limit,
            // the rest of it is read again next time; short of a bigger one,
            // the events after it are read now.
            let (early_after, early_filter, early_limit) = &request;
            if (*early_after, early_filter) == (after, filter) {
                batch = Some(match result {
                    Ok(early) if early.events.len() == *early_limit && *early_limit < limit => {
                        self.ask((early.next, filter.clone(), limit - early_limit))?;
                        self.answer()?.1.map(|rest| early.followed_by(rest))
                    }
                    other => other.map(|b| b.truncated(limit)),
                });
            }
        }
        let batch = match batch {
            Some(batch) => batch,
            None => {
                self.ask(wanted)?;
                self.answer()?.1
            }
        };
        if let Ok(full) = &batch
            && full.events.len() == limit
        {
            let next = (full.next, filter.clone(), limit);
            self.ask(next.clone())?;
            self.ahead = Some(next);
        }
        batch
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.requests = None; // ends the thread's loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
