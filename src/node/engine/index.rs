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
}

impl Index {
    pub(super) fn pending(held: BitVec) -> Index {
        Index {
            pending: Some(held),
            ..Default::default()
        }
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Engine {
    pub(super) fn start_index(&mut self) {
        let (Some(held), Some(basis)) = (self.index.pending.take(), self.basis.clone()) else {
            return;
        };
        let (m, content) = (self.manifest.clone(), self.content.clone());
        let (tx, stop) = (self.events_tx.clone(), self.index.stop.clone());
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let result = basis.run(&m, Some((&content, &held)), &stop, |p| {
                tx.blocking_send(Event::Indexed(p)).is_ok()
            });
            let _ = tx.blocking_send(Event::IndexDone {
                result,
                took: t.elapsed(),
            });
        });
    }

    pub(super) fn on_indexed(&mut self, now: Instant, p: BasisProgress) {
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
        self.report.basis_index_secs = took.as_secs_f64();
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
                bytesize::ByteSize(self.report.bytes_from_basis),
            );
            if b.found_nothing() {
                self.basis = None; // nothing to take deltas from
            }
        }
        Ok(())
    }
}
