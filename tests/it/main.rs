//! Integration tests: the real binary, real QUIC on loopback, real files.

mod adversary;
mod advertise;
mod changed;
mod checkable;
mod delta;
mod endings;
mod errors;
mod examples;
mod faithful;
mod faults;
mod groups;
mod haves;
mod hoarder;
mod holder;
mod hostile;
mod idler;
mod local_safety;
mod metrics;
mod names;
mod netsim;
mod peerlists;
mod preauth;
mod resume;
mod swarmnet;
mod transfer;
mod util;
