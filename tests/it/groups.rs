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
    let mut run = Run::start(three_groups(), SIZE, &[], &[]);
    run.finish(Duration::from_secs(180));
    for g in 1..3 {
        let wan = run.net.wan_bytes_in(g);
        let ratio = wan as f64 / run.size as f64;
        eprintln!("group {g}: {wan} bytes in over the WAN, {ratio:.3} x S");
        assert!(ratio <= 1.10, "group {g} took {ratio:.3} x S over the WAN");
    }
    // the reports split bytes by group, and agree with the links
    // and QUIC's own counters carry those bytes plus their overhead
    let mut cross = [0u64; 3];
    let mut udp_cross = [0u64; 3];
    for (g, h, _) in &run.joiners {
        let r = run.report(*g, *h);
        let (same, x) = (
            r["received_same_group"].as_u64().unwrap(),
            r["received_cross_group"].as_u64().unwrap(),
        );
        assert_eq!(same + x, r["bytes_received"].as_u64().unwrap());
        let udp = |class: &str| r[class]["udp_received_bytes"].as_u64().unwrap();
        assert!(udp("quic_same_group") >= same, "g{g}h{h}: {r}");
        assert!(udp("quic_cross_group") >= x, "g{g}h{h}: {r}");
        cross[*g] += x;
        udp_cross[*g] += udp("quic_cross_group");
    }
    for (g, &udp) in udp_cross.iter().enumerate().skip(1) {
        let wan = run.net.wan_bytes_in(g);
        eprintln!(
            "group {g}: QUIC UDP payload from other groups {:.3} x S",
            udp as f64 / run.size as f64
        );
        assert!(
            udp < wan,
            "group {g}: {udp} UDP bytes but {wan} on the link"
        );
    }
    assert_eq!(cross[0], 0, "the seed's group needs nothing from outside");
    for (g, &x) in cross.iter().enumerate().skip(1) {
        assert!(x >= run.size, "group {g}: {x} cross-group bytes");
        assert!(x as f64 <= 1.05 * run.size as f64, "group {g}: {x}");
    }
    // a bridge spreads in its group: it sends a new piece to one member and
    // the others to that member, so its uplink carries about one copy (two
    // members each fetching every piece from it would make it two)
    for (g, h, _) in &run.joiners {
        let r = run.report(*g, *h);
        if *g > 0 && r["was_bridge"].as_bool().unwrap() {
            let served = r["served_same_group"].as_u64().unwrap() as f64 / run.size as f64;
            eprintln!("group {g}: bridge g{g}h{h} served {served:.2} x S to its group");
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
