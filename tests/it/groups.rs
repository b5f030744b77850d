//! Datacenter groups on the emulated network (tests/it/netsim.rs): real
//! processes in network namespaces, shaped NICs and WAN links. Root only.

use std::time::Duration;

use super::netsim::{Net, Spec};
use super::swarmnet::Run;

const MBIT: u64 = 1_000_000;

#[test]
fn emulated_wan_has_the_latency_asked_for() {
    let net = Net::new(Spec {
        hosts: vec![2, 1],
        nic_bps: 200 * MBIT,
        wan_bps: 50 * MBIT,
        wan_delay: Duration::from_millis(20),
        mtu: 1500,
    })
    .unwrap();
    let (a, b, c) = (net.host(0, 0), net.host(0, 1), net.host(1, 0));
    let local = net.ping(a, b, 3).unwrap();
    let wan = net.ping(a, c, 3).unwrap();
    assert!(local < Duration::from_millis(5), "same group: {local:?}");
    // one-way 20 ms between groups: the RTT is 40 ms plus a little
    assert!(
        wan >= Duration::from_millis(40) && wan < Duration::from_millis(60),
        "across groups: {wan:?}"
    );
    let before = net.wan_bytes_in(1);
    net.ping(a, c, 2).unwrap();
    assert!(net.wan_bytes_in(1) > before, "uplink counters move");
    net.set_wan(1, false);
    assert!(
        net.ping(a, c, 1).is_err(),
        "a downed WAN link carries nothing"
    );
    net.set_wan(1, true);
    net.ping(a, c, 3).expect("the link comes back");
}

fn three_groups() -> Spec {
    Spec {
        hosts: vec![4, 3, 3],
        nic_bps: 200 * MBIT,
        wan_bps: 50 * MBIT,
        wan_delay: Duration::from_millis(20),
        mtu: 1500,
    }
}

const SIZE: usize = 48 << 20;

#[test]
fn each_remote_group_takes_the_image_over_the_wan_about_once() {
    check_wan_once(Run::start(three_groups(), SIZE, &[], &[]));
}

/// Hosts started seconds apart, as an ssh loop starts them: each newcomer
/// must not take the bridge role over mid-transfer (with the hash alone
/// ranking hosts, each remote group took 1.44-1.82 x S over its WAN).
#[test]
fn joiners_started_one_by_one_still_cross_the_wan_about_once() {
    let gap = Duration::from_millis(700);
    check_wan_once(Run::start_apart(three_groups(), SIZE, &[], &[], gap));
}

/// Waits for `run`, then checks the bytes into each remote group: on the
/// link, in QUIC's counters, in pieces; and how its bridge spread them.
fn check_wan_once(mut run: Run) {
    run.finish(Duration::from_secs(180));
    let s = run.size as f64;
    // every figure first, so that a failed bound shows where the bytes went
    let mut cross = [0u64; 3];
    let mut udp_cross = [0u64; 3];
    let reports: Vec<_> = run
        .joiners
        .iter()
        .map(|(g, h, _)| (*g, *h, run.report(*g, *h)))
        .collect();
    let quic = |r: &serde_json::Value, class: &str, n: &str| r[class][n].as_u64().unwrap();
    let pieces = |r: &serde_json::Value, class: &str| r[class].as_u64().unwrap();
    for (g, h, r) in &reports {
        let (same, x) = (
            pieces(r, "received_same_group"),
            pieces(r, "received_cross_group"),
        );
        eprintln!(
            "g{g}h{h}: bridge {}, pieces {:.3} x S same group, {:.3} cross, served {:.2} \
             to its group; QUIC cross: {} connections, UDP in {:.3}, sent {:.3}, lost {:.3}",
            r["was_bridge"],
            same as f64 / s,
            x as f64 / s,
            pieces(r, "served_same_group") as f64 / s,
            quic(r, "quic_cross_group", "connections"),
            quic(r, "quic_cross_group", "udp_received_bytes") as f64 / s,
            quic(r, "quic_cross_group", "udp_sent_bytes") as f64 / s,
            quic(r, "quic_cross_group", "lost_bytes") as f64 / s,
        );
        cross[*g] += x;
        udp_cross[*g] += quic(r, "quic_cross_group", "udp_received_bytes");
    }
    let wan: Vec<u64> = (0..3).map(|g| run.net.wan_bytes_in(g)).collect();
    for g in 1..3 {
        eprintln!(
            "group {g}: WAN in {} bytes, {:.3} x S as frames; QUIC UDP payload {:.3} x S; \
             pieces {:.3} x S",
            wan[g],
            wan[g] as f64 / s,
            udp_cross[g] as f64 / s,
            cross[g] as f64 / s,
        );
    }
    // the reports split bytes by group, and QUIC's own counters carry
    // those bytes plus their overhead
    for (g, h, r) in &reports {
        let (same, x) = (
            pieces(r, "received_same_group"),
            pieces(r, "received_cross_group"),
        );
        assert_eq!(same + x, pieces(r, "bytes_received"), "g{g}h{h}: {r}");
        assert!(
            quic(r, "quic_same_group", "udp_received_bytes") >= same,
            "g{g}h{h}: {r}"
        );
        assert!(
            quic(r, "quic_cross_group", "udp_received_bytes") >= x,
            "g{g}h{h}: {r}"
        );
    }
    for g in 1..3 {
        let ratio = wan[g] as f64 / s;
        assert!(ratio <= 1.10, "group {g} took {ratio:.3} x S over the WAN");
        // QUIC's own counters carry the link's bytes less the headers
        assert!(
            udp_cross[g] < wan[g],
            "group {g}: {} UDP bytes but {} on the link",
            udp_cross[g],
            wan[g]
        );
    }
    assert_eq!(cross[0], 0, "the seed's group needs nothing from outside");
    for (g, &x) in cross.iter().enumerate().skip(1) {
        assert!(x >= run.size, "group {g}: {x} cross-group bytes");
        assert!(x as f64 <= 1.05 * s, "group {g}: {x}");
    }
    // a bridge spreads in its group: it sends a new piece to one member and
    // the others to that member, so its uplink carries about one copy (two
    // members each fetching every piece from it would make it two)
    for (g, h, r) in &reports {
        if *g > 0 && r["was_bridge"].as_bool().unwrap() {
            let served = pieces(r, "served_same_group") as f64 / s;
            assert!(served <= 1.5, "bridge g{g}h{h} served {served:.2} x S");
        }
    }
}

#[test]
fn another_host_takes_over_when_the_bridge_dies() {
    let mut run = Run::start(three_groups(), SIZE, &[], &[]);
    run.wait_wan_in(1, run.size / 2, Duration::from_secs(120));
    let i = run.bridge_of(1).expect("group 1 has a bridge");
    let (_, h, mut bridge) = run.joiners.remove(i);
    bridge.kill9();
    eprintln!("killed g1h{h}, the bridge of group 1");
    run.finish(Duration::from_secs(180));
    let took_over = run
        .joiners
        .iter()
        .filter(|(g, _, _)| *g == 1)
        .any(|(_, _, p)| p.log_text().contains("group g1: bridge 1 of 1"));
    assert!(took_over, "no other host of group 1 became its bridge");
}

#[test]
fn a_wan_outage_of_20s_heals_by_itself() {
    let mut run = Run::start(three_groups(), SIZE, &[], &[]);
    run.wait_wan_in(1, run.size / 3, Duration::from_secs(120));
    run.net.set_wan(1, false);
    std::thread::sleep(Duration::from_secs(20));
    run.net.set_wan(1, true);
    run.finish(Duration::from_secs(240));
}
