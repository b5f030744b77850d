//! Pieces in both directions: starting the fetches the core decides on and
//! taking their results, answering serve requests, and finalizing the
//! complete copy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Engine, Event};
use crate::core::{Failure, PeerKey};
use crate::manifest::blocks;
use crate::node::peer::close;
use crate::node::serve::{PieceSource, ServeAnswer};
use crate::node::{NodeError, fetch, hex};
use crate::storage::{Content, Root, StorageError};
use crate::text;
use crate::wire::{Message, Request, Status as WireStatus};

impl Engine {
    /// Starts the requests the core decides on.
    pub(super) fn schedule(&mut self) {
        let Some(d) = &mut self.download else { return };
        for (key, piece) in d.poll_requests(Instant::now()) {
            let Some(p) = self.peers.get(&key) else {
                continue;
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
    }

    /// `bytes`: received from the peer, and taken from the basis.
    pub(super) fn on_piece(
        &mut self,
        key: PeerKey,
        piece: u32,
        data: Bytes,
        bytes: (u64, u64),
        elapsed: Duration,
    ) {
        self.fetches.remove(&(key, piece));
        tracing::trace!(peer = key, piece, ?elapsed, "piece done");
        let Some(d) = &mut self.download else { return };
        if d.have()[piece as usize] {
            return; // a duplicate that finished after the winner
        }
        let (bytes, from_basis) = bytes;
        if d.lacked_by_a_peer(piece as usize) {
            let n = data.len();
            self.recent.insert(piece, data, n);
        }
        self.report.bytes_from_basis += from_basis;
        for c in d.piece_received(key, piece, bytes, elapsed) {
            if let Some(t) = self.fetches.remove(&(c.peer, c.piece)) {
                tracing::trace!(peer = c.peer, piece = c.piece, "cancel");
                t.cancel();
            }
        }
        let have: BitVec = d.have().to_bitvec();
        let complete = d.is_complete();
        self.count_received(key, bytes);
        self.last_progress = Instant::now();
        self.have.send_replace(Arc::new(have));
        if complete {
            self.start_finalize();
        }
    }

    pub(super) fn on_piece_failed(&mut self, key: PeerKey, piece: u32, why: Failure) {
        tracing::trace!(peer = key, piece, ?why, "request failed");
        self.fetches.remove(&(key, piece));
        if why == Failure::Corrupt {
            self.report.pieces_corrupt += 1;
            if let Some(p) = self.peers.get(&key) {
                tracing::warn!(
                    peer = hex(&p.info.id[..4]),
                    piece,
                    "piece failed verification; dropping the peer"
                );
                self.banned.ban(p.info.id, p.handle.conn.remote_address());
                self.report.peers_banned += 1;
                p.handle.conn.close(close::CORRUPT.into(), b"corrupt piece");
            }
            if let Some(d) = &mut self.download {
                d.remove_peer(key);
            }
        } else if let Some(d) = &mut self.download {
            d.piece_failed(key, piece, why, Instant::now());
        }
    }

    pub(super) fn on_write_failed(
        &mut self,
        piece: u32,
        why: std::io::Error,
    ) -> Result<(), NodeError> {
        // A late endgame duplicate may fail to write after the copy
        // was finished and renamed; only a piece we lack is fatal.
        if self
            .download
            .as_ref()
            .is_some_and(|d| d.have()[piece as usize])
        {
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
        let Some(p) = self.peers.get_mut(&key) else {
            // a request that arrived as its peer was being dropped
            return ServeAnswer::Refuse(WireStatus::Missing);
        };
        p.heard = Instant::now();
        let i = match req.piece() {
            None => return ServeAnswer::Manifest(self.manifest_bytes.clone()),
            Some(i) => i as usize,
        };
        if i >= self.manifest.piece_count() || !self.have.borrow()[i] {
            return ServeAnswer::Refuse(WireStatus::Missing);
        }
        if self.changed[i] {
            return ServeAnswer::Refuse(WireStatus::Changed);
        }
        let len = self.manifest.piece_range(i).1;
        let fits = match &req {
            Request::Outboard(_) => blocks::splittable(len),
            Request::Blocks { wanted, .. } => {
                blocks::splittable(len) && wanted.len() == blocks::count(len) && wanted.any()
            }
            _ => true,
        };
        if !fits {
            return ServeAnswer::Refuse(WireStatus::Missing);
        }
        if let Request::Outboard(_) = req {
            // 0.2% of the piece, asked before its blocks: served by any
            // holder, outside the spreading of pieces
            return ServeAnswer::Piece {
                from: self.piece_source(i),
                len,
                limits: Vec::new(),
            };
        }
        let remote = self.peers.get(&key).is_some_and(|p| p.remote);
        let now = Instant::now();
        let serve = match &self.download {
            None => self.spreader.should_serve(key, i, remote, now),
            Some(_) if remote => true,
            // a bridge is its group's only source of what it pulls over
            // the WAN, unless a member holds everything (the seed's group)
            Some(d) if d.bridge().is_some() && !self.spreader.has_full_holder() => {
                self.spreader.should_serve(key, i, false, now)
            }
            Some(_) => {
                self.spreader.note_serve(key, i);
                true
            }
        };
        if !serve {
            return ServeAnswer::Refuse(WireStatus::Elsewhere);
        }
        if remote && self.group_holds_all() {
            self.id.wan.serving.mark(now);
        }
        if let Some(p) = self.peers.get_mut(&key) {
            p.serving += 1;
        }
        let limits = [
            self.upload_limit.clone(),
            self.wan_limit.clone().filter(|_| remote),
        ];
        ServeAnswer::Piece {
            from: self.piece_source(i),
            len,
            limits: limits.into_iter().flatten().collect(),
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

    /// Whether this host's group holds a full copy (this host, or a peer of
    /// its group that holds every piece): its hosts then put the WAN flows
    /// they serve before their own group (`cc`). A group still pulling the
    /// image in does not: there every piece that crosses the WAN must
    /// spread to its members, and its LAN is the path that matters.
    pub(super) fn group_holds_all(&self) -> bool {
        self.download.is_none() || self.spreader.has_full_holder() || self.have.borrow().all()
    }

    /// A piece read from disk to serve no longer matched the manifest:
    /// the file changed after it was hashed. Said loudly (once per file),
    /// counted, and never served again.
    pub(super) fn on_source_changed(&mut self, piece: u32) {
        let i = piece as usize;
        if self.changed.replace(i, true) {
            return;
        }
        self.report.pieces_changed += 1;
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
        if !counted {
            self.count_served(key, bytes);
            return;
        }
        let (known, remote) = match self.peers.get_mut(&key) {
            Some(p) => {
                p.serving = p.serving.saturating_sub(1);
                p.heard = Instant::now();
                (true, p.remote)
            }
            None => (false, false),
        };
        if remote && self.group_holds_all() {
            self.id.wan.serving.mark(Instant::now());
        }
        // a peer already dropped must not come back as a holder
        self.spreader
            .serve_ended(key, piece as usize, completed && known, Instant::now());
        self.count_served(key, bytes);
    }

    pub(super) fn start_finalize(&mut self) {
        let Some(partial) = self.partial.take() else {
            return;
        };
        self.finalizing = true;
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
        self.basis = None;
        let tx = self.events_tx.clone();
        let content = self.content.clone();
        tokio::task::spawn_blocking(move || {
            content.seal();
            let r = partial.finish(&m, force, keep);
            let _ = tx.blocking_send(Event::Finalized(r));
        });
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
        self.complete = true;
        self.finalizing = false;
        self.report.output = Some(crate::text::path(&path));
        self.report.complete_secs = Some(self.started.elapsed().as_secs_f64());
        for p in self.peers.values() {
            let _ = p.handle.control.try_send(Message::Done);
        }
        Ok(())
    }
}
