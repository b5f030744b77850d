//! The basis indexed beside the fetches: the engine starts the pass
//! (`storage::basis`) on a blocking thread once it runs, and hears of it
//! batch by batch. The pieces the pass may fill are held from fetching
//! (`Host::hold`) until it finds them whole (written, verified: a local
//! piece, announced like any other) or releases them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bitvec::prelude::*;

use super::Engine;
use crate::node::NodeError;
use crate::node::event::Event;
use crate::storage::{BasisProgress, StorageError};

/// The index's state in the engine.
#[derive(Default)]
pub(super) struct Index {
    /// The pieces held for it, until it is started.
    pending: Option<BitVec>,
    /// Set to end the pass early (the engine is done).
    stop: Arc<AtomicBool>,
    /// When it started; `None` again once it is over.
    started: Option<Instant>,
}

impl Index {
    pub(super) fn pending(held: BitVec) -> Index {
        Index {
            pending: Some(held),
            ..Default::default()
        }
    }

    /// Ends the pass: the copy is complete, or the run is over. Returns
    /// how long it had run if it was still running.
    pub(super) fn stop(&mut self) -> Option<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        self.started.take().map(|t| t.elapsed())
    }
}

impl Engine {
    pub(super) fn start_index(&mut self) {
        let (Some(held), Some(basis)) = (self.index.pending.take(), self.basis.clone()) else {
            return;
        };
        let (m, content) = (self.manifest.clone(), self.content.clone());
        let (tx, stop) = (self.events_tx.clone(), self.index.stop.clone());
        self.index.started = Some(Instant::now());
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            // a panic must not leave the pieces held (and the stall rule
            // off) for ever: it ends the join like a failed write
            let run = std::panic::AssertUnwindSafe(|| {
                basis.run(&m, Some((&content, &held)), &stop, |p| {
                    tx.blocking_send(Event::Indexed(p)).is_ok()
                })
            });
            let result = std::panic::catch_unwind(run)
                .unwrap_or_else(|_| Err(std::io::Error::other("the basis index failed")));
            let _ = tx.blocking_send(Event::IndexDone {
                result,
                took: t.elapsed(),
            });
        });
    }

    pub(super) fn on_indexed(&mut self, now: Instant, p: BasisProgress) {
        tracing::trace!(
            found = p.found.len(),
            released = p.released.len(),
            "indexed"
        );
        for &i in &p.found {
            if self.host.piece_local(now, i) {
                self.report.pieces_from_basis += 1;
            }
        }
        self.report.bytes_from_basis += p.bytes;
        self.host.release(&p.released);
    }

    pub(super) fn on_index_done(
        &mut self,
        now: Instant,
        result: std::io::Result<()>,
        took: Duration,
    ) -> Result<(), NodeError> {
        self.host.indexed(now);
        if self.index.started.take().is_some() {
            self.report.basis_index_secs = took.as_secs_f64();
        }
        if let Err(why) = result {
            if self.host.is_complete() {
                return Ok(());
            }
            // a write beside the basis failed (the disk is full): exit
            // with the I/O code, the partial copy kept to resume
            let path = self
                .partial
                .as_ref()
                .map_or_else(Default::default, |p| p.partial_path.clone());
            return Err(NodeError::Storage(StorageError::Io { path, source: why }));
        }
        if let Some(b) = &self.basis {
            tracing::info!(
                "basis: {} files, {} indexed in {:.1}s, {} of {} pieces ({}) taken from it whole",
                b.files,
                bytesize::ByteSize(b.bytes),
                took.as_secs_f64(),
                self.report.pieces_from_basis,
                self.manifest.piece_count(),
                bytesize::ByteSize(b.whole_bytes.load(Ordering::Relaxed)),
            );
            if b.found_nothing() {
                self.basis = None; // nothing to take deltas from
            }
        }
        Ok(())
    }
}
