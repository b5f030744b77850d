//! Integration tests: the real binary, real QUIC on loopback, real files.

mod adversary;
mod errors;
mod faults;
mod groups;
mod haves;
mod hoarder;
mod holder;
mod hostile;
mod netsim;
mod peerlists;
mod resume;
mod swarmnet;
mod transfer;
mod util;
