//! Endgame timing: when a piece in flight is late enough to be asked of a
//! second peer. A piece's age is that of its oldest request in flight; the
//! yardstick is how long this host's pieces from its own group typically
//! take (a moving average). Most of what is in flight when the endgame
//! starts arrives in time, and a copy of it only takes bandwidth from the
//! rest; a piece at a slow or silent source turns late and is duplicated.
//!
//! A bridge's pieces from other groups have their own yardstick (they
//! cross a longer, thinner link) and a larger factor: a duplicate there
//! crosses the WAN again, so only a piece stuck at one source (a flow that
//! lost its window to losses: 1 MiB pieces took 3-4 s at the end of a 2 x 4
//! delta run where the others took 0.2-0.5 s) is asked of another.

use std::time::{Duration, Instant};

/// A piece is late once its oldest request in flight has taken this many
/// times as long as a piece typically takes.
pub const LATE_FACTOR: f64 = 1.5;

/// The same for a bridge's pieces from other groups.
pub const WAN_LATE_FACTOR: f64 = 4.0;

pub struct Lateness {
    /// When each piece in flight was asked for by its oldest request.
    asked_at: Vec<Option<Instant>>,
    /// How long a request typically takes to deliver (moving average).
    typical: Option<Duration>,
    /// The same for requests to other groups.
    typical_remote: Option<Duration>,
}

impl Lateness {
    pub fn new(pieces: usize) -> Self {
        Lateness {
            asked_at: vec![None; pieces],
            typical: None,
            typical_remote: None,
        }
    }

    /// Piece `i` was asked for at `now`; its first request sets its age.
    pub fn asked(&mut self, i: usize, now: Instant) {
        self.asked_at[i].get_or_insert(now);
    }

    /// A request of `i` ended: `oldest` is when its oldest request still in
    /// flight was made (`None` when none is).
    pub fn set_oldest(&mut self, i: usize, oldest: Option<Instant>) {
        self.asked_at[i] = oldest;
    }

    /// A piece arrived after `elapsed`, from another group if `remote`.
    pub fn delivered(&mut self, elapsed: Duration, remote: bool) {
        let typical = if remote {
            &mut self.typical_remote
        } else {
            &mut self.typical
        };
        *typical = Some(match *typical {
            None => elapsed,
            Some(t) => (t * 7 + elapsed) / 8,
        });
    }

    /// When piece `i`, in flight to another group, turns late there; not
    /// before a piece came from another group.
    pub fn late_remote_at(&self, i: usize) -> Option<Instant> {
        let typical = self.typical_remote?;
        Some(self.asked_at[i]? + typical.mul_f64(WAN_LATE_FACTOR))
    }

    /// When piece `i`, in flight, turns late. Before any piece arrived
    /// there is no typical time, and anything may be duplicated.
    pub fn late_at(&self, i: usize) -> Option<Instant> {
        let typical = self.typical?;
        Some(self.asked_at[i]? + typical.mul_f64(LATE_FACTOR))
    }

    pub fn is_late(&self, i: usize, now: Instant) -> bool {
        self.late_at(i).is_none_or(|t| t <= now)
    }

    #[cfg(test)]
    pub fn asked_at(&self) -> &[Option<Instant>] {
        &self.asked_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_is_late_after_the_factor_times_the_typical_time() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Lateness::new(2);
        l.asked(0, t);
        assert!(l.is_late(0, t), "no typical time yet: anything may be");
        l.delivered(ms(100), false);
        assert_eq!(l.late_at(0), Some(t + ms(150)));
        assert_eq!(l.late_remote_at(0), None, "nothing came from afar yet");
        l.delivered(ms(400), true);
        assert_eq!(l.late_remote_at(0), Some(t + ms(1600)));
        assert_eq!(l.late_at(0), Some(t + ms(150)), "its own yardstick");
        assert!(!l.is_late(0, t + ms(149)));
        assert!(l.is_late(0, t + ms(150)));
        // a later request does not make the piece younger
        l.asked(0, t + ms(100));
        assert_eq!(l.late_at(0), Some(t + ms(150)));
        l.set_oldest(0, Some(t + ms(100)));
        assert_eq!(l.late_at(0), Some(t + ms(250)));
        l.set_oldest(0, None);
        assert_eq!(l.late_at(0), None);
        // a moving average: one slow piece moves it by an eighth
        l.delivered(ms(900), false);
        l.asked(1, t);
        assert_eq!(l.late_at(1), Some(t + ms(200).mul_f64(LATE_FACTOR)));
    }
}
