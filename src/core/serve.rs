//! How many of one connection's requests a host serves at once: slow start
//! on the serving side, the mirror of a joiner's per-source window
//! (`source`). A requester that takes what it asked for earns more
//! concurrent serves; one that stops reading holds at most one.
//!
//! * A connection starts with `INITIAL` serves at once and gains one per
//!   piece it took in full, up to `max`.
//! * A serve the requester stalled (took no bytes for a while, or not the
//!   whole piece by its deadline) drops the window to one.
//! * A refusal, a manifest, or a request the requester cancelled changes
//!   nothing.

/// Serves at once for a connection that has taken no piece yet.
pub const INITIAL: usize = 2;
/// Most requests of one connection served at once.
pub const PER_CONNECTION: usize = 16;
/// Most requests a process serves at once.
pub const TOTAL: usize = 32;

/// How a serve ended, for the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The whole piece was handed over.
    Piece,
    /// The requester stopped taking bytes: it is not reading.
    Stalled,
    /// Anything else: a refusal, the manifest, a cancelled request, an
    /// error on our side.
    Other,
}

#[derive(Debug)]
pub struct ServeWindow {
    cap: usize,
    max: usize,
    busy: usize,
}

impl ServeWindow {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        ServeWindow {
            cap: INITIAL.min(max),
            max,
            busy: 0,
        }
    }

    /// Takes a slot if the window has one free.
    pub fn try_start(&mut self) -> bool {
        if self.busy < self.cap {
            self.busy += 1;
            true
        } else {
            false
        }
    }

    /// Gives back a slot taken by `try_start`.
    pub fn end(&mut self, how: Served) {
        debug_assert!(self.busy > 0, "end without start");
        self.busy = self.busy.saturating_sub(1);
        match how {
            Served::Piece => self.cap = (self.cap + 1).min(self.max),
            Served::Stalled => self.cap = 1,
            Served::Other => {}
        }
    }

    /// Serves at once allowed now.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(w: &mut ServeWindow) -> usize {
        let mut n = 0;
        while w.try_start() {
            n += 1;
        }
        n
    }

    #[test]
    fn starts_small_and_grows_with_pieces_taken() {
        let mut w = ServeWindow::new(8);
        assert_eq!(fill(&mut w), INITIAL);
        for _ in 0..20 {
            w.end(Served::Piece);
            assert!(w.try_start());
        }
        assert_eq!(w.cap(), 8);
        // busy is still INITIAL: six more fit, then none
        assert_eq!(fill(&mut w), 8 - INITIAL);
    }

    #[test]
    fn a_stall_leaves_one_slot_until_a_piece_is_taken() {
        let mut w = ServeWindow::new(8);
        for _ in 0..10 {
            assert!(w.try_start());
            w.end(Served::Piece);
        }
        assert_eq!(fill(&mut w), 8);
        w.end(Served::Stalled);
        assert_eq!(w.cap(), 1);
        // seven are still busy, more than the one slot
        assert!(!w.try_start());
        for _ in 0..7 {
            w.end(Served::Other);
        }
        assert_eq!(fill(&mut w), 1);
        w.end(Served::Piece);
        assert_eq!(fill(&mut w), 2);
    }

    #[test]
    fn refusals_and_cancels_change_nothing() {
        let mut w = ServeWindow::new(8);
        for _ in 0..100 {
            assert!(w.try_start());
            w.end(Served::Other);
        }
        assert_eq!(w.cap(), INITIAL);
    }

    #[test]
    fn a_window_of_one_stays_one() {
        let mut w = ServeWindow::new(1);
        assert_eq!(fill(&mut w), 1);
        w.end(Served::Piece);
        assert_eq!(fill(&mut w), 1);
    }
}
