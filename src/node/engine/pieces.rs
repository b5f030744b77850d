//! Pieces in both directions: starting the fetches the core decides on and
//! taking their results, answering serve requests, and finalizing the
//! complete copy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::core::PeerKey;
use crate::core::host::Decision;
use crate::node::event::{Event, PieceSource, ServeAnswer};
use crate::node::{NodeError, fetch};
use crate::storage::{Content, Root, StorageError};
use crate::text;
use crate::wire::Request;

impl Engine {
    /// Starts a request the host decided on.
    pub(super) fn start_fetch(&mut self, key: PeerKey, piece: u32) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        tracing::trace!(peer = key, piece, remote = p.remote, "request");
        let cancel = CancellationToken::new();
        self.fetches.insert((key, piece), cancel.clone());
        let job = fetch::Job {
            key,
            conn: p.handle.conn.clone(),
            wan_limit: self.wan_limit.clone().filter(|_| p.remote),
            piece,
            manifest: self.manifest.clone(),
            content: self.content.clone(),
            basis: self.basis.clone(),
            cancel,
        };
        tokio::spawn(fetch::run(job, self.events_tx.clone()));
    }

    /// `bytes`: received from the peer, and taken from the basis.
    pub(super) fn on_piece(
        &mut self,
        key: PeerKey,
        piece: u32,
        data: Option<Bytes>,
        bytes: (u64, u64),
        elapsed: Duration,
    ) {
        self.fetches.remove(&(key, piece));
        tracing::trace!(peer = key, piece, ?elapsed, "piece done");
        let (bytes, from_basis) = bytes;
        let Some(keep) = self
            .host
            .piece_done(Instant::now(), key, piece, bytes, elapsed)
        else {
            return; // a duplicate that finished after the winner
        };
        if keep && let Some(data) = data {
            let n = data.len();
            self.recent.insert(piece, data, n);
        }
        self.report.bytes_from_basis += from_basis;
        self.count_received(key, bytes);
    }

    pub(super) fn on_write_failed(
        &mut self,
        piece: u32,
        why: std::io::Error,
    ) -> Result<(), NodeError> {
        // A late endgame duplicate may fail to write after the copy
        // was finished and renamed; only a piece we lack is fatal.
        if self.host.have()[piece as usize] {
            tracing::debug!(piece, "late duplicate not written: {why}");
            Ok(())
        } else {
            // a local I/O failure (e.g. the disk is full): exit with the
            // I/O code; the partial file and its verified pieces stay for
            // a later run to resume
            let path = self
                .partial
                .as_ref()
                .map_or_else(Default::default, |p| p.partial_path.clone());
            Err(NodeError::Storage(StorageError::Io { path, source: why }))
        }
    }

    pub(super) fn serve_answer(&mut self, key: PeerKey, req: Request) -> ServeAnswer {
        let now = Instant::now();
        match self.host.serve(now, key, &req) {
            Decision::Refuse(status) => ServeAnswer::Refuse(status),
            Decision::Manifest => ServeAnswer::Manifest(self.manifest_bytes.clone()),
            Decision::Piece {
                piece,
                len,
                counted,
                remote,
                wan_first,
            } => {
                if wan_first {
                    self.id.wan.serving.mark(now);
                }
                let limits = [
                    self.upload_limit.clone().filter(|_| counted),
                    self.wan_limit.clone().filter(|_| counted && remote),
                ];
                ServeAnswer::Piece {
                    from: self.piece_source(piece),
                    len,
                    limits: limits.into_iter().flatten().collect(),
                }
            }
        }
    }

    /// Where piece `i`'s bytes are read from: memory if it came lately,
    /// else the disk (checked against the manifest as it is read).
    fn piece_source(&mut self, i: usize) -> PieceSource {
        let (offset, len) = self.manifest.piece_range(i);
        match self.recent.get(i as u32) {
            Some(data) if data.len() as u64 == len => {
                self.report.pieces_served_from_memory += 1;
                PieceSource::Memory(data)
            }
            _ => PieceSource::Disk {
                content: self.content.clone(),
                offset,
                hash: *self.manifest.piece_hash(i).unwrap_or(&[0; 32]),
            },
        }
    }

    /// A piece read from disk to serve no longer matched the manifest:
    /// the file changed after it was hashed. Said loudly (once per file),
    /// counted, and never served again.
    pub(super) fn on_source_changed(&mut self, piece: u32) {
        let i = piece as usize;
        if !self.host.source_changed(piece) {
            return;
        }
        let files = self.files_of_piece(i);
        if self.changed_files.insert(files.clone()) {
            let root = text::path(&self.content_root);
            tracing::error!(
                "{root} changed after it was hashed: piece {i} ({files}) no longer matches \
                 the manifest and is no longer served; hosts that need it will fail. \
                 Seed the new content again for a new ticket"
            );
        } else {
            tracing::debug!(piece, "changed on disk; no longer served");
        }
    }

    /// The files piece `i` spans, for messages (names quoted and escaped:
    /// on a joiner they come from the seed).
    pub(super) fn files_of_piece(&self, i: usize) -> String {
        let (start, len) = self.manifest.piece_range(i);
        let names: Vec<String> = self
            .manifest
            .files()
            .iter()
            .filter(|f| f.offset < start + len && start < f.offset + f.size)
            .map(|f| match f.path.is_empty() {
                true => format!("\"{}\"", text::escape(&self.manifest.name)),
                false => format!(
                    "\"{}/{}\"",
                    text::escape(&self.manifest.name),
                    text::escape(&f.path)
                ),
            })
            .collect();
        match names.len() {
            0 => "no file".into(),
            1..=3 => names.join(", "),
            n => format!("{} and {} more files", names[..3].join(", "), n - 3),
        }
    }

    pub(super) fn on_serve_ended(
        &mut self,
        key: PeerKey,
        piece: u32,
        bytes: u64,
        completed: bool,
        counted: bool,
    ) {
        if counted {
            let now = Instant::now();
            if self.host.serve_ended(now, key, piece, completed) {
                self.id.wan.serving.mark(now);
            }
        }
        self.count_served(key, bytes);
    }

    pub(super) fn start_finalize(&mut self) {
        let Some(partial) = self.partial.take() else {
            return;
        };
        let m = self.manifest.clone();
        let (force, keep) = (self.exit.force, self.exit.keep);
        if let Some(b) = &self.basis
            && b.missed() > 0
        {
            self.report.basis_blocks_missed = b.missed();
            tracing::warn!(
                "basis: {} blocks no longer matched what was indexed (it changed while swarm read it) \
                 and were fetched instead; the copy is verified as always",
                b.missed()
            );
        }
        // its open files go with it: a --force basis is removed after the
        // rename, and its space must not stay held while this host lingers
        // (nor by the index, which has nothing left to fill)
        self.basis = None;
        if let Some(took) = self.index.stop() {
            // complete before the pass read everything: how long it ran
            self.report.basis_index_secs = took.as_secs_f64();
        }
        let tx = self.events_tx.clone();
        let content = self.content.clone();
        self.finishing = Some(tokio::task::spawn_blocking(move || {
            content.seal();
            match partial.finish(&m, force, keep) {
                Ok((path, root, replaced)) => {
                    // complete now: the copy is durable and in place; the
                    // old one goes while this host serves or exits
                    let _ = tx.blocking_send(Event::Finalized(Ok((path, root))));
                    if let Some(r) = replaced {
                        r.remove();
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Event::Finalized(Err(e)));
                }
            }
        }));
    }

    /// The complete copy is in place: serve from it and tell every peer.
    pub(super) fn on_finalized(
        &mut self,
        r: Result<(PathBuf, Root), StorageError>,
    ) -> Result<(), NodeError> {
        let (path, root) = r?;
        // served from the handle the copy was made through, not by name:
        // whatever is put at the final path later is not what peers get
        let files = self.manifest.files();
        let content = Content::from_root(root, files, false).map_err(|e| {
            NodeError::Storage(StorageError::Io {
                path: path.clone(),
                source: e,
            })
        })?;
        self.content = Arc::new(content);
        self.host.finalized();
        self.report.output = Some(crate::text::path(&path));
        self.report.complete_secs = Some(self.started.elapsed().as_secs_f64());
        Ok(())
    }
}
