//! Application error codes: on a connection's CONNECTION_CLOSE, and on a
//! request stream's RESET_STREAM and STOP_SENDING (docs/protocol.md).

/// Normal end: this host is done and leaves.
pub const DONE: u32 = 0;
/// The handshake's proof failed, or it came too late.
pub const AUTH: u32 = 1;
/// The peer broke the protocol (a malformed or out-of-place message).
pub const PROTOCOL: u32 = 2;
/// Not wanted: a second connection between the same two hosts, a full
/// connection table, or an acceptor busy with handshakes (reason `busy`).
pub const DUPLICATE: u32 = 3;
/// The peer sent a piece that failed verification.
pub const CORRUPT: u32 = 4;
/// A request no longer wanted (an endgame duplicate that lost).
pub const CANCEL: u32 = 5;
/// Stream reset code: the piece read from disk no longer matches the
/// manifest (its file changed after it was hashed).
pub const CHANGED: u32 = 6;
