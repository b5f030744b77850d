//! Wire messages (see docs/protocol.md). Pure encode/decode with named limits;
//! decoders return errors and never panic.
//!
//! * Control stream (the first bidirectional stream the dialer opens): a
//!   sequence of frames `len u32 | type u8 | body`, `len` covering type and
//!   body and at most `MAX_FRAME`. Each side's first frame is its `Proof`
//!   (a fixed `PROOF_FRAME_LEN` bytes), its second its `Hello`.
//! * Request streams (one bidirectional stream per request): the requester
//!   writes a `Request`, the holder answers with a status byte and then the
//!   bytes (a piece, or `len u32` + the manifest).

use std::net::SocketAddr;
use std::sync::Arc;

use bitvec::prelude::*;

use crate::codec::{DecodeError, Reader, Writer, check_limit};
use crate::manifest::ManifestId;
use crate::ticket::{decode_addr, encode_addr};

pub const PROTOCOL_VERSION: u16 = 7;
/// The ALPN of this version: `swarm/` and the version in decimal.
pub const ALPN: &[u8] = b"swarm/7";
/// Versions whose ALPN a host accepts at the TLS layer, only to close such
/// a connection with the version close reason instead of a TLS alert.
pub const KNOWN_VERSIONS: std::ops::RangeInclusive<u16> = 1..=15;
/// A `Proof` frame, length prefix included: `33 u32 | 7 | proof [32]`.
pub const PROOF_FRAME_LEN: usize = 4 + 1 + 32;
pub const MAX_FRAME: usize = 1 << 20;
pub const MAX_GROUP_LEN: usize = 64;
pub const MAX_ADDRS: usize = 16;
pub const MAX_PEERS: usize = 512;
pub const MAX_BITFIELD_BITS: usize = crate::manifest::MAX_PIECES;

pub type PeerId = [u8; 16];

/// The largest frame a valid message takes in a swarm of `pieces` pieces:
/// a Peers message at every limit (512 peers, 64-byte group names, 16 IPv6
/// addresses each: 198,147 bytes), or the bitfield if larger. A peer that
/// announces a longer frame is refused before the body is read.
pub fn max_frame_for(pieces: usize) -> usize {
    const ADDR: usize = 1 + 16 + 2;
    const PEERS: usize = 1 + 2 + MAX_PEERS * (16 + 2 + MAX_GROUP_LEN + 1 + MAX_ADDRS * ADDR);
    let bitfield = 1 + 4 + pieces.div_ceil(8);
    PEERS.max(bitfield).min(MAX_FRAME)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: PeerId,
    pub group: String,
    pub addrs: Vec<SocketAddr>,
}

/// The ALPN of protocol `version`.
pub fn alpn(version: u16) -> Vec<u8> {
    format!("swarm/{version}").into_bytes()
}

/// The version an ALPN of the form `swarm/N` names.
pub fn alpn_version(alpn: &[u8]) -> Option<u16> {
    let n = std::str::from_utf8(alpn.strip_prefix(b"swarm/")?).ok()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
        return None;
    }
    n.parse().ok()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub manifest_id: ManifestId,
    pub peer_id: PeerId,
    /// When this host started, in ms since the Unix epoch. The bridge
    /// election ranks a group's longest-running members first.
    pub since: u64,
    pub group: String,
    /// Where this host accepts connections. An unspecified IP (0.0.0.0)
    /// means "the address you see me at", with this port.
    pub addrs: Vec<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// keyed blake3 of the TLS exporter value under the swarm secret: each
    /// side's first frame, and all a side sends before the other's proof
    /// has checked out.
    Proof([u8; 32]),
    Hello(Hello),
    Bitfield(BitVec<u8, Lsb0>),
    Have(u32),
    /// Shared: a host sends one list of newcomers to every peer.
    Peers(Arc<[PeerInfo]>),
    /// The sender has every piece.
    Done,
    /// Whether the sender wants the receiver's Haves. Off: send none for
    /// now (a host that does not fetch from this peer: a non-bridge, from
    /// another group). On: send a Bitfield now and Haves again.
    WantHaves(bool),
}

mod code {
    pub const HELLO: u8 = 1;
    pub const BITFIELD: u8 = 2;
    pub const HAVE: u8 = 3;
    pub const PEERS: u8 = 4;
    pub const DONE: u8 = 5;
    pub const WANT_HAVES: u8 = 6;
    pub const PROOF: u8 = 7;
}

impl Message {
    /// Encodes a whole frame, length prefix included.
    pub fn encode_frame(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(0);
        match self {
            Message::Proof(p) => {
                w.u8(code::PROOF);
                w.bytes(p);
            }
            Message::Hello(h) => {
                w.u8(code::HELLO);
                w.u16(h.version);
                w.bytes(&h.manifest_id.0);
                w.bytes(&h.peer_id);
                w.u64(h.since);
                w.str16(&h.group);
                encode_addrs(&mut w, &h.addrs);
            }
            Message::Bitfield(bits) => {
                w.u8(code::BITFIELD);
                w.u32(bits.len() as u32);
                w.bytes(bits.as_raw_slice());
            }
            Message::Have(i) => {
                w.u8(code::HAVE);
                w.u32(*i);
            }
            Message::Peers(peers) => {
                w.u8(code::PEERS);
                let peers = &peers[..peers.len().min(MAX_PEERS)];
                w.u16(peers.len() as u16);
                for p in peers {
                    w.bytes(&p.id);
                    w.str16(&p.group);
                    encode_addrs(&mut w, &p.addrs);
                }
            }
            Message::Done => w.u8(code::DONE),
            Message::WantHaves(on) => {
                w.u8(code::WANT_HAVES);
                w.u8(u8::from(*on));
            }
        }
        let len = (w.buf.len() - 4) as u32;
        w.buf[..4].copy_from_slice(&len.to_le_bytes());
        w.buf
    }

    /// Reads a frame's length prefix; rejects empty or oversized frames.
    pub fn frame_len(header: [u8; 4]) -> Result<usize, DecodeError> {
        let len = u32::from_le_bytes(header) as usize;
        check_limit("frame length", len as u64, MAX_FRAME as u64)?;
        if len == 0 {
            return Err(DecodeError::invalid("frame", "empty"));
        }
        Ok(len)
    }

    /// Decodes a whole `Proof` frame, length prefix included: what a host
    /// reads first from a peer that has not proved the secret, a fixed
    /// number of bytes, so nothing the peer sends sizes a buffer.
    pub fn decode_proof_frame(frame: &[u8; PROOF_FRAME_LEN]) -> Result<[u8; 32], DecodeError> {
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        match Message::decode(&frame[4..]) {
            Ok(Message::Proof(p)) if len as usize == PROOF_FRAME_LEN - 4 => Ok(p),
            _ => Err(DecodeError::invalid("first frame", "not a proof")),
        }
    }

    /// Decodes a frame body (type byte and body, without the length prefix).
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        check_limit("frame length", frame.len() as u64, MAX_FRAME as u64)?;
        let mut r = Reader::new(frame);
        let msg = match r.u8()? {
            code::PROOF => Message::Proof(r.array()?),
            code::HELLO => Message::Hello(Hello {
                version: r.u16()?,
                manifest_id: ManifestId(r.array()?),
                peer_id: r.array()?,
                since: r.u64()?,
                group: group(&mut r)?,
                addrs: decode_addrs(&mut r)?,
            }),
            code::BITFIELD => {
                let n = r.u32()? as usize;
                check_limit("bitfield length", n as u64, MAX_BITFIELD_BITS as u64)?;
                let raw = r.bytes(n.div_ceil(8))?;
                let mut bits = BitVec::<u8, Lsb0>::from_slice(raw);
                if bits[n..].any() {
                    return Err(DecodeError::invalid("bitfield", "padding bits set"));
                }
                bits.truncate(n);
                Message::Bitfield(bits)
            }
            code::HAVE => Message::Have(r.u32()?),
            code::PEERS => {
                let n = r.u16()? as usize;
                check_limit("peer count", n as u64, MAX_PEERS as u64)?;
                let mut peers = Vec::with_capacity(n.min(r.remaining() / 19));
                for _ in 0..n {
                    peers.push(PeerInfo {
                        id: r.array()?,
                        group: group(&mut r)?,
                        addrs: decode_addrs(&mut r)?,
                    });
                }
                Message::Peers(peers.into())
            }
            code::DONE => Message::Done,
            code::WANT_HAVES => match r.u8()? {
                0 => Message::WantHaves(false),
                1 => Message::WantHaves(true),
                v => return Err(DecodeError::invalid("want-haves flag", v.to_string())),
            },
            t => return Err(DecodeError::invalid("message type", t.to_string())),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn group(r: &mut Reader) -> Result<String, DecodeError> {
    Ok(r.str16("group name", MAX_GROUP_LEN)?.to_string())
}

fn encode_addrs(w: &mut Writer, addrs: &[SocketAddr]) {
    let addrs = &addrs[..addrs.len().min(MAX_ADDRS)];
    w.u8(addrs.len() as u8);
    for a in addrs {
        encode_addr(w, a);
    }
}

fn decode_addrs(r: &mut Reader) -> Result<Vec<SocketAddr>, DecodeError> {
    let n = r.u8()? as usize;
    check_limit("address count", n as u64, MAX_ADDRS as u64)?;
    (0..n).map(|_| decode_addr(r)).collect()
}

/// What a request stream asks for (its first bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `1 | piece u32`: the piece's bytes.
    Piece(u32),
    /// `2 | 0 u32`: the manifest (`len u32` and its bytes).
    Manifest,
    /// `3 | piece u32`: the piece's outboard, the CVs of its blocks
    /// (`manifest::blocks`), 32 bytes each. For a piece of more than one
    /// block.
    Outboard(u32),
    /// `4 | piece u32 | bits u32 | bitmap`: the blocks of the piece whose
    /// bits are set, one after the other (a delta against a basis).
    /// `bits` is the piece's block count; the bitmap is `bits.div_ceil(8)`
    /// bytes, least significant bit first, padding bits clear.
    Blocks {
        piece: u32,
        wanted: BitVec<u8, Lsb0>,
    },
    /// `5 | piece u32 | bits u32 | hints: bits x 2 bytes`: the piece's
    /// outboard, then the blocks whose CV does not start with their hint
    /// and that are not all zeros, framed as a Piece answer (a delta in
    /// one round trip: a hint is the first two bytes of the CV of the
    /// block the requester already has there). At most `MAX_DELTA_BLOCKS`.
    Delta { piece: u32, hints: Vec<[u8; 2]> },
}

/// Most blocks a Delta request may give hints for (pieces of up to
/// 64 MiB): its hints are as long as the bitmap of a Blocks request of
/// a 1 GiB piece. A larger piece is fetched with Outboard and Blocks.
pub const MAX_DELTA_BLOCKS: usize = crate::manifest::blocks::MAX_BLOCKS / 16;

/// Length of a request's fixed head (type and piece).
pub const REQUEST_LEN: usize = 5;
/// Longest request: `Blocks` of a 1 GiB piece.
pub const MAX_REQUEST_LEN: usize = REQUEST_LEN + 4 + crate::manifest::blocks::MAX_BLOCKS / 8;

mod req {
    pub const PIECE: u8 = 1;
    pub const MANIFEST: u8 = 2;
    pub const OUTBOARD: u8 = 3;
    pub const BLOCKS: u8 = 4;
    pub const DELTA: u8 = 5;
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Piece(i) => {
                w.u8(req::PIECE);
                w.u32(*i);
            }
            Request::Manifest => {
                w.u8(req::MANIFEST);
                w.u32(0);
            }
            Request::Outboard(i) => {
                w.u8(req::OUTBOARD);
                w.u32(*i);
            }
            Request::Blocks { piece, wanted } => {
                w.u8(req::BLOCKS);
                w.u32(*piece);
                w.u32(wanted.len() as u32);
                w.bytes(wanted.as_raw_slice());
            }
            Request::Delta { piece, hints } => {
                w.u8(req::DELTA);
                w.u32(*piece);
                w.u32(hints.len() as u32);
                w.bytes(hints.as_flattened());
            }
        }
        w.buf
    }

    /// How many more bytes the request whose first bytes are `head` (at
    /// least `REQUEST_LEN`) takes; 0 when it is whole. Errors on a type
    /// that is not known, or a length past the limits.
    pub fn more(head: &[u8]) -> Result<usize, DecodeError> {
        let want = match head.first() {
            Some(&req::BLOCKS) if head.len() < REQUEST_LEN + 4 => REQUEST_LEN + 4,
            Some(&req::BLOCKS) => {
                let bits = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
                check_limit(
                    "block count",
                    bits as u64,
                    crate::manifest::blocks::MAX_BLOCKS as u64,
                )?;
                REQUEST_LEN + 4 + bits.div_ceil(8)
            }
            Some(&req::DELTA) if head.len() < REQUEST_LEN + 4 => REQUEST_LEN + 4,
            Some(&req::DELTA) => {
                let bits = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
                check_limit("delta block count", bits as u64, MAX_DELTA_BLOCKS as u64)?;
                REQUEST_LEN + 4 + 2 * bits
            }
            Some(1..=3) => REQUEST_LEN,
            _ => {
                return Err(DecodeError::invalid(
                    "request",
                    format!("type {:?}", head.first()),
                ));
            }
        };
        Ok(want.saturating_sub(head.len()))
    }

    pub fn decode(b: &[u8]) -> Result<Request, DecodeError> {
        check_limit("request length", b.len() as u64, MAX_REQUEST_LEN as u64)?;
        let mut r = Reader::new(b);
        let t = r.u8()?;
        let i = r.u32()?;
        let req = match t {
            req::PIECE => Request::Piece(i),
            req::MANIFEST if i == 0 => Request::Manifest,
            req::OUTBOARD => Request::Outboard(i),
            req::BLOCKS => {
                let n = r.u32()? as usize;
                check_limit(
                    "block count",
                    n as u64,
                    crate::manifest::blocks::MAX_BLOCKS as u64,
                )?;
                let mut wanted = BitVec::<u8, Lsb0>::from_slice(r.bytes(n.div_ceil(8))?);
                if wanted[n..].any() {
                    return Err(DecodeError::invalid("block bitmap", "padding bits set"));
                }
                wanted.truncate(n);
                Request::Blocks { piece: i, wanted }
            }
            req::DELTA => {
                let n = r.u32()? as usize;
                check_limit("delta block count", n as u64, MAX_DELTA_BLOCKS as u64)?;
                let hints = r
                    .bytes(2 * n)?
                    .chunks_exact(2)
                    .map(|h| [h[0], h[1]])
                    .collect();
                Request::Delta { piece: i, hints }
            }
            t => {
                return Err(DecodeError::invalid(
                    "request",
                    format!("type {t}, argument {i}"),
                ));
            }
        };
        r.finish()?;
        Ok(req)
    }

    /// The piece a request is about.
    pub fn piece(&self) -> Option<u32> {
        match self {
            Request::Piece(i) | Request::Outboard(i) => Some(*i),
            Request::Blocks { piece, .. } | Request::Delta { piece, .. } => Some(*piece),
            Request::Manifest => None,
        }
    }
}

/// First byte of an answer on a request stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The bytes follow.
    Ok = 0,
    /// The holder does not have it.
    Missing = 1,
    /// The holder wants the requester to fetch this piece elsewhere for now
    /// (the seed spreading distinct pieces first).
    Elsewhere = 2,
    /// The holder's copy of this piece no longer matches the manifest (its
    /// file changed after it was hashed); it will not serve it again.
    Changed = 3,
}

/// The start of the answer to a manifest request: `Status::Ok`, then the
/// manifest's length (u32 LE); the manifest's bytes follow.
pub fn manifest_answer_header(len: usize) -> [u8; 5] {
    let mut h = [Status::Ok as u8, 0, 0, 0, 0];
    h[1..].copy_from_slice(&(len as u32).to_le_bytes());
    h
}

/// The manifest length of an answer (what follows its status byte), at
/// most `MAX_MANIFEST_BYTES`.
pub fn manifest_answer_len(b: [u8; 4]) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes(b);
    check_limit(
        "manifest length",
        len.into(),
        crate::manifest::MAX_MANIFEST_BYTES as u64,
    )?;
    Ok(len as usize)
}

impl Status {
    pub fn decode(b: u8) -> Result<Status, DecodeError> {
        match b {
            0 => Ok(Status::Ok),
            1 => Ok(Status::Missing),
            2 => Ok(Status::Elsewhere),
            3 => Ok(Status::Changed),
            s => Err(DecodeError::invalid("status", s.to_string())),
        }
    }
}

pub mod close;
pub mod piece;

#[cfg(test)]
mod tests;
