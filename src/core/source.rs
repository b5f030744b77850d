//! How much a joiner trusts one source with: its measured rate, a request
//! window with slow start, and backoff after failures. This is what keeps a
//! peer that answers slowly, never, or wrongly from holding many pieces.
//!
//! * The window starts at `initial_window`, grows by one per verified piece
//!   (up to the peer's slots) and falls to one when a request fails, so a
//!   peer that accepts requests and never answers holds at most this many
//!   pieces until their deadlines.
//! * Each failure pauses the source: the backoff (0.5 s), doubling with
//!   every failure in a row, at most `MAX_PAUSE`; so one that fails fast
//!   (resets every stream half way) cannot draw request after request.
//! * A source is *proven* once it has delivered a piece; the endgame's
//!   duplicate cap counts only requests to proven sources.

use crate::core::LocalMap;
use std::time::{Duration, Instant};

/// The rate (bytes/s) given to a source whose first request failed, so that
/// measured sources are asked before it.
const FAILED_RATE: f64 = 1.0;

/// The longest a failing source is paused. Well below the time after
/// which a finished host stops waiting for a quiet peer (30 s).
const MAX_PAUSE: Duration = Duration::from_secs(10);

pub(super) struct Source {
    /// Exponentially weighted bytes/second of completed pieces (0: not
    /// measured yet).
    rate: f64,
    window: usize,
    failures: u32,
    paused_until: Option<Instant>,
    proven: bool,
    /// piece -> until when not to ask this source for it
    avoid: LocalMap<u32, Instant>,
}

impl Source {
    pub(super) fn new(initial_window: usize) -> Self {
        Source {
            rate: 0.0,
            window: initial_window.max(1),
            failures: 0,
            paused_until: None,
            proven: false,
            avoid: LocalMap::default(),
        }
    }

    /// Requests it may have in flight now, given its `slots`.
    pub(super) fn window(&self, slots: usize) -> usize {
        slots.min(self.window)
    }

    pub(super) fn is_proven(&self) -> bool {
        self.proven
    }

    /// Not paused at `now`.
    pub(super) fn is_ready(&self, now: Instant) -> bool {
        self.paused_until.is_none_or(|t| t <= now)
    }

    /// The key to order sources by, fastest first; an unmeasured source
    /// counts as fastest, so it gets tried.
    pub(super) fn order_rate(&self) -> f64 {
        if self.rate == 0.0 {
            f64::MAX
        } else {
            self.rate
        }
    }

    pub(super) fn avoids(&self, piece: usize) -> bool {
        !self.avoid.is_empty() && self.avoid.contains_key(&(piece as u32))
    }

    /// A verified piece of `bytes` arrived after `elapsed`. Returns true if
    /// this made the source proven.
    pub(super) fn delivered(&mut self, bytes: u64, elapsed: Duration, slots: usize) -> bool {
        let sample = bytes as f64 / elapsed.as_secs_f64().max(1e-6);
        self.rate = if self.rate == 0.0 {
            sample
        } else {
            0.7 * self.rate + 0.3 * sample
        };
        self.window = self.window.saturating_add(1).min(slots);
        self.failures = 0;
        !std::mem::replace(&mut self.proven, true)
    }

    /// The source asked us to fetch `piece` elsewhere for a while.
    pub(super) fn sent_elsewhere(&mut self, piece: u32, until: Instant) {
        self.avoid.insert(piece, until);
    }

    /// A request for `piece` failed (deadline, reset, lost connection): its
    /// rate halves (an unmeasured one gets a low one), its window falls to
    /// one, the piece is avoided for `backoff` and the source paused.
    pub(super) fn failed(&mut self, piece: u32, now: Instant, backoff: Duration) {
        self.rate = if self.rate == 0.0 {
            FAILED_RATE
        } else {
            self.rate / 2.0
        };
        self.window = 1;
        self.avoid.insert(piece, now + backoff);
        self.failures = self.failures.saturating_add(1);
        let pause = backoff
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(MAX_PAUSE);
        self.paused_until = Some(now + pause);
    }

    /// Forgets backoffs that ended by `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        self.avoid.retain(|_, until| *until > now);
    }

    /// When its backoffs end.
    pub(super) fn wake_times(&self) -> impl Iterator<Item = &Instant> {
        self.avoid.values().chain(self.paused_until.iter())
    }
}
