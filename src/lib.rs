//! swarm: distribute one big file or directory to many hosts over QUIC,
//! BitTorrent-style, with no central relay.
//!
//! Layers (dependencies point down only):
//! * `cli`: arguments, human units, progress, exit codes.
//! * `node`: quinn endpoint, connection tasks, the engine task; `storage`:
//!   disk I/O (also the walk and hashing that build a manifest).
//! * pure, no I/O: `core` (scheduling state machines), `wire` (messages),
//!   `manifest` (model and codec), `ticket`, `codec`.

pub mod cli;
pub mod codec;
pub mod core;
pub mod manifest;
pub mod node;
pub mod sim;
pub mod storage;
pub mod text;
pub mod ticket;
pub mod wire;
