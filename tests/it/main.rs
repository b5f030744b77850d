//! Integration tests: the real binary, real QUIC on loopback, real files.

mod errors;
mod hostile;
mod resume;
mod transfer;
mod util;
