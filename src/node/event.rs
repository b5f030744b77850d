//! What the connection, fetch and serve tasks tell the engine (`Event`, on
//! its one bounded channel), and what the engine answers a serve request
//! with (`ServeAnswer`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::identity::Handshaken;
use super::rate::RateLimit;
use crate::core::{Failure, PeerKey};
use crate::storage::{Content, Root, StorageError};
use crate::wire::{Message, PeerId, Request, Status};

pub enum Event {
    Connected(Box<Handshaken>),
    DialFailed {
        id: PeerId,
        why: String,
    },
    PeerMsg {
        key: PeerKey,
        msg: Message,
        /// The share of the control-frame budget a large message holds
        /// until it is handled.
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    PeerDown {
        key: PeerKey,
        why: String,
    },
    /// A piece verified and written; `data` is its bytes, to serve from.
    PieceDone {
        key: PeerKey,
        piece: u32,
        /// The piece, to keep for serving; `None` when it was completed
        /// in place on disk, never whole in memory.
        data: Option<Bytes>,
        /// Bytes that came from the peer (all of them, or a delta's
        /// outboard and blocks) and from the basis.
        received: u64,
        from_basis: u64,
        elapsed: Duration,
    },
    /// A batch of the basis's index: pieces found whole (written) and
    /// pieces released to fetch (`storage::basis::Progress`).
    Indexed(crate::storage::BasisProgress),
    /// The index ended: a write failed, or it read everything.
    IndexDone {
        result: std::io::Result<()>,
        took: Duration,
    },
    PieceFailed {
        key: PeerKey,
        piece: u32,
        why: Failure,
    },
    WriteFailed {
        piece: u32,
        why: std::io::Error,
    },
    ServeAsk {
        key: PeerKey,
        req: Request,
        reply: oneshot::Sender<ServeAnswer>,
    },
    ServeEnded {
        key: PeerKey,
        piece: u32,
        bytes: u64,
        completed: bool,
        /// The piece read from disk no longer matched the manifest.
        changed: bool,
        /// A piece's bytes (whole, or blocks) that took a serve of the
        /// engine's: false for an outboard, which only counts as bytes.
        counted: bool,
    },
    /// The copy is in place: its path and the handle on it.
    Finalized(Result<(PathBuf, Root), StorageError>),
}

/// Why the engine allowed or refused a request, with what to read from.
pub enum ServeAnswer {
    Piece {
        from: PieceSource,
        len: u64,
        /// Token buckets every byte of the piece passes (upload, WAN).
        limits: Vec<Arc<RateLimit>>,
    },
    Manifest(Arc<Vec<u8>>),
    Refuse(Status),
}

/// Where a served piece's bytes come from.
pub enum PieceSource {
    /// Hashed as it is read: the last chunk leaves only if the piece
    /// matches `hash`, the manifest's (see `Changed`).
    Disk {
        content: Arc<Content>,
        offset: u64,
        hash: [u8; 32],
    },
    /// A piece received lately (`core::RecentPieces`).
    Memory(Bytes),
}
