//! Whether and how to serve a peer's request: the manifest, a whole piece,
//! a delta's outboard or blocks; the seed's and a bridge's spreading rules.

use std::time::Instant;

use super::Host;
use crate::core::PeerKey;
use crate::manifest::blocks;
use crate::wire::{Request, Status};

/// The answer to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Refuse(Status),
    Manifest,
    /// Serve piece `piece` (`len` bytes, or a delta's part of it).
    Piece {
        piece: usize,
        len: u64,
        /// Counted as one of the peer's serves (not an outboard): its end
        /// must be reported with `serve_ended`.
        counted: bool,
        /// To another group: the WAN limit applies.
        remote: bool,
        /// This host serves another group while its own holds everything:
        /// its WAN flows go first (`cc`).
        wan_first: bool,
    },
}

impl Host {
    /// Decides on `req` from `key`.
    pub fn serve(&mut self, now: Instant, key: PeerKey, req: &Request) -> Decision {
        let Some(p) = self.peers.get_mut(&key) else {
            // a request that arrived as its peer was being dropped
            return Decision::Refuse(Status::Missing);
        };
        p.heard = now;
        let remote = p.remote;
        let Some(i) = req.piece().map(|i| i as usize) else {
            return Decision::Manifest;
        };
        if i >= self.manifest.piece_count() || !self.have()[i] {
            return Decision::Refuse(Status::Missing);
        }
        if self.changed[i] {
            return Decision::Refuse(Status::Changed);
        }
        let len = self.manifest.piece_range(i).1;
        let fits = match req {
            Request::Outboard(_) => blocks::splittable(len),
            Request::Blocks { wanted, .. } => {
                blocks::splittable(len) && wanted.len() == blocks::count(len) && wanted.any()
            }
            Request::Delta { hints, .. } => {
                blocks::splittable(len) && hints.len() == blocks::count(len)
            }
            _ => true,
        };
        if !fits {
            return Decision::Refuse(Status::Missing);
        }
        if let Request::Outboard(_) = req {
            // 0.2% of the piece, asked before its blocks: served by any
            // holder, outside the spreading of pieces
            return Decision::Piece {
                piece: i,
                len,
                counted: false,
                remote,
                wan_first: false,
            };
        }
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
            return Decision::Refuse(Status::Elsewhere);
        }
        let wan_first = remote && self.group_holds_all();
        if let Some(p) = self.peers.get_mut(&key) {
            p.serving += 1;
        }
        Decision::Piece {
            piece: i,
            len,
            counted: true,
            remote,
            wan_first,
        }
    }

    /// A counted serve (`Decision::Piece` with `counted`) ended. Returns
    /// whether it was to another group while this one holds everything
    /// (see `Decision::Piece::wan_first`).
    pub fn serve_ended(&mut self, now: Instant, key: PeerKey, piece: u32, completed: bool) -> bool {
        let (known, remote) = match self.peers.get_mut(&key) {
            Some(p) => {
                p.serving = p.serving.saturating_sub(1);
                p.heard = now;
                (true, p.remote)
            }
            None => (false, false),
        };
        let wan_first = remote && self.group_holds_all();
        // a peer already dropped must not come back as a holder
        self.spreader
            .serve_ended(key, piece as usize, completed && known, now);
        wan_first
    }
}
