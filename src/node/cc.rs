//! Congestion control inside a group: cubic, which also backs off on
//! queueing delay while this host serves another group, so that the WAN
//! flows leaving through the same NIC queue are not starved.
//!
//! A host of a multi-group swarm often sends to its own group and to a
//! host behind the WAN at once, through one NIC queue. Loss-based
//! controllers (cubic) fill that queue until it drops packets, and at the
//! same loss rate a flow's rate goes as 1/RTT: the 60 ms WAN flow got a
//! tenth of what a sub-millisecond LAN flow got, and the WAN into the
//! remote group ran at half its rate while the seed's group copied
//! (docs/benchmarks.md, groups section). So while a host serves another
//! group, each of its connections inside the group also backs off on
//! queueing delay (smoothed RTT over minimum RTT), not only on loss: once
//! the delay passes half of what it was when the queue last overflowed
//! (and a floor), it cuts its window as cubic does on a loss, at most once
//! per round trip. The LAN flows then keep that queue from overflowing,
//! and the WAN flows, plain cubic, no longer lose packets in it. A host
//! that serves no other group, or whose group still pulls the image in
//! (every host of a one-group swarm, the remote groups until one of their
//! hosts is complete), runs plain cubic.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, Cubic, CubicConfig};

/// Builds the controllers of connections inside the group.
pub struct LanConfig {
    cubic: Arc<CubicConfig>,
    wan_serving: Arc<WanServing>,
    floor: Duration,
}

impl LanConfig {
    pub fn new(wan_serving: Arc<WanServing>, floor: Duration) -> Self {
        LanConfig {
            cubic: Arc::new(CubicConfig::default()),
            wan_serving,
            floor,
        }
    }
}

/// When this host last served a host of another group; the back-off holds
/// for `HOLD` after that (a piece crosses a WAN share in about a second).
pub struct WanServing {
    base: Instant,
    /// Milliseconds since `base`, plus one; 0: never.
    last: AtomicU64,
}

const HOLD: Duration = Duration::from_secs(3);

impl Default for WanServing {
    fn default() -> Self {
        WanServing {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl WanServing {
    pub fn mark(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.base).as_millis() as u64;
        self.last.store(ms + 1, Ordering::Relaxed);
    }

    pub fn recent(&self, now: Instant) -> bool {
        match self.last.load(Ordering::Relaxed) {
            0 => false,
            last => {
                let ms = now.saturating_duration_since(self.base).as_millis() as u64;
                ms + 1 < last + HOLD.as_millis() as u64
            }
        }
    }
}

impl ControllerFactory for LanConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Lan {
            cubic: Cubic::new(self.cubic.clone(), now, current_mtu),
            delay: DelayTrigger::new(self.floor),
            cross_group: Default::default(),
            config: self,
        })
    }
}

#[derive(Clone)]
struct Lan {
    cubic: Cubic,
    delay: DelayTrigger,
    /// Set once the handshake shows the peer is of another group
    /// (`mark_cross_group`): shared with the clones quinn hands out.
    cross_group: Arc<AtomicBool>,
    config: Arc<LanConfig>,
}

impl Controller for Lan {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.cubic.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.cubic.on_ack(now, sent, bytes, app_limited, rtt);
        let yielding =
            self.config.wan_serving.recent(now) && !self.cross_group.load(Ordering::Relaxed);
        if yielding && self.delay.on_ack(now, rtt.get(), rtt.min()) {
            // a congestion event for packets sent until now
            self.cubic.on_congestion_event(now, now, false, 0);
        }
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest: Option<u64>,
    ) {
        self.cubic.on_end_acks(now, in_flight, app_limited, largest);
    }

    fn on_congestion_event(&mut self, now: Instant, sent: Instant, persistent: bool, lost: u64) {
        self.cubic.on_congestion_event(now, sent, persistent, lost);
        self.delay.on_loss();
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.cubic.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.cubic.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.cubic.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.cubic.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A connection accepted before this host knew the dialer's address
/// belongs to another group gets the in-group controller; once the
/// handshake names the peer's group, this exempts it from the back-off,
/// so that it is plain cubic like the connections this host opens to other
/// groups.
pub fn mark_cross_group(conn: &quinn::Connection) {
    if let Ok(lan) = conn.congestion_state().into_any().downcast::<Lan>() {
        lan.cross_group.store(true, Ordering::Relaxed);
    }
}

/// When queueing delay should count as congestion: once it passes half
/// the delay seen when the queue last overflowed (a loss), or `floor`
/// before any loss, and at most once per smoothed round trip. Half, so
/// the queue is cut well before it overflows again; from the last loss,
/// so that the threshold follows the queue this path really has (a
/// 25 ms NIC queue in the emulated network, far less in a switch with
/// shallow buffers) and stays above the scheduling noise in the RTT of
/// a busy host.
#[derive(Clone, Debug)]
pub struct DelayTrigger {
    floor: Duration,
    /// Queueing delay at the last loss.
    at_loss: Option<Duration>,
    /// Queueing delay at the last acknowledgement counted (while yielding).
    now: Duration,
    last_cut: Option<Instant>,
}

impl DelayTrigger {
    pub fn new(floor: Duration) -> Self {
        DelayTrigger {
            floor,
            at_loss: None,
            now: Duration::ZERO,
            last_cut: None,
        }
    }

    pub fn threshold(&self) -> Duration {
        self.at_loss.map_or(self.floor, |d| (d / 2).max(self.floor))
    }

    /// Whether the delay calls for a cut now.
    pub fn on_ack(&mut self, now: Instant, srtt: Duration, min_rtt: Duration) -> bool {
        self.now = srtt.saturating_sub(min_rtt);
        let due = self
            .last_cut
            .is_none_or(|t| now.saturating_duration_since(t) >= srtt);
        if due && self.now > self.threshold() {
            self.last_cut = Some(now);
            return true;
        }
        false
    }

    pub fn on_loss(&mut self) {
        self.at_loss = Some(self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn cuts_above_the_floor_until_a_loss_then_above_half_its_delay() {
        let t0 = Instant::now();
        let mut d = DelayTrigger::new(2 * MS);
        let min = Duration::from_micros(100);
        assert!(!d.on_ack(t0, min + MS, min));
        assert!(d.on_ack(t0, min + 3 * MS, min));
        // the queue overflowed at 20 ms of delay: cut above 10 ms
        d.on_ack(t0 + 100 * MS, min + 20 * MS, min);
        d.on_loss();
        assert_eq!(d.threshold(), 10 * MS);
        assert!(!d.on_ack(t0 + 200 * MS, min + 9 * MS, min));
        assert!(d.on_ack(t0 + 300 * MS, min + 11 * MS, min));
        // a loss with an empty queue keeps the floor
        d.on_ack(t0 + 400 * MS, min, min);
        d.on_loss();
        assert_eq!(d.threshold(), 2 * MS);
    }

    #[test]
    fn cuts_at_most_once_per_round_trip() {
        let t0 = Instant::now();
        let mut d = DelayTrigger::new(2 * MS);
        let srtt = 5 * MS;
        assert!(d.on_ack(t0, srtt, Duration::ZERO));
        assert!(!d.on_ack(t0 + 4 * MS, srtt, Duration::ZERO));
        assert!(d.on_ack(t0 + 5 * MS, srtt, Duration::ZERO));
    }

    #[test]
    fn wan_serving_holds_for_a_while() {
        let w = WanServing::default();
        let t0 = Instant::now();
        assert!(!w.recent(t0));
        w.mark(t0);
        assert!(w.recent(t0 + HOLD / 2));
        assert!(!w.recent(t0 + HOLD + MS));
    }
}
