use super::*;

fn small(groups: usize, n: usize) -> Scenario {
    Scenario {
        groups,
        hosts_per_group: n,
        size: 16 << 20,
        piece_size: 1 << 20,
        up: 25e6,
        down: 25e6,
        wan: Some(12.5e6),
        lan_latency: 0.0002,
        wan_latency: 0.03,
        bridges: 1,
        seed_max_peers: 512,
        stagger: 0.0,
        slow_share: 0.0,
        slow_factor: 1.0,
        linger: 3.0,
        fail_share: 0.0,
        fail_at: 0.0,
        wan_outage: None,
        tick: 0.002,
        seed: 1,
        limit: 600.0,
        cascade: true,
        bittorrent: true,
    }
}

/// Everything but the wall clock and memory.
fn figures(mut v: Value) -> Value {
    v["sim"] = Value::Null;
    v["swarm"]["wall_s"] = Value::Null;
    v
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let sc = small(2, 3);
    let a = figures(run(&sc, &mut |_, _, _| {}));
    let b = figures(run(&sc, &mut |_, _, _| {}));
    assert_eq!(a, b);
    assert_eq!(a["swarm"]["all"]["hosts_done"], 5);
    let c = figures(run(
        &Scenario {
            seed: 2,
            stagger: 1.0,
            ..sc
        },
        &mut |_, _, _| {},
    ));
    assert_ne!(a, c, "another seed, another run");
}

/// Every byte a host received, some host sent; every joiner received the
/// image at least once; the seed sent at least one copy.
#[test]
fn bytes_are_conserved() {
    let sc = small(2, 4);
    let m = Arc::new(sc.manifest());
    let mut s = swarm::Swarm::new(&sc, m);
    s.run(sc.limit, &mut |_, _| {});
    let hosts = s.outcome();
    let sent: f64 = hosts.iter().map(|h| h.uploaded).sum();
    let got: f64 = hosts.iter().map(|h| h.received).sum();
    assert!((sent - got).abs() < 1.0, "sent {sent} received {got}");
    for h in &hosts[1..] {
        assert!(h.done.is_some() && h.failed.is_none());
        assert!(h.received >= sc.size as f64, "{h:?}");
    }
    assert!(hosts[0].uploaded >= sc.size as f64);
    // the remote group took the image over the WAN about once
    let wan = s.wan_in();
    assert!(
        wan[1] >= sc.size as f64 && wan[1] < 1.3 * sc.size as f64,
        "{wan:?}"
    );
}

/// One group of 8 at 200 Mbit/s: swarm near S/B, the cascade's three
/// rounds of full copies far behind it.
#[test]
fn swarm_beats_the_cascade_near_the_limit() {
    let sc = Scenario {
        size: 64 << 20,
        ..small(1, 8)
    };
    let v = run(&sc, &mut |_, _, _| {});
    let swarm = v["swarm"]["all"]["last_over_t_star"].as_f64().unwrap();
    let cascade = v["cascade"]["last_over_t_star"].as_f64().unwrap();
    assert!(swarm < 1.4, "swarm at {swarm} T*");
    assert!(cascade > 2.5, "cascade at {cascade} T*");
}

/// Slow hosts finish near their own limit, and well after the fast ones
/// (how far the fast ones are held back is a figure, docs/simulation.md).
#[test]
fn slow_hosts_finish_near_their_own_limit() {
    let sc = Scenario {
        size: 64 << 20,
        slow_share: 0.25,
        slow_factor: 0.25,
        ..small(1, 8)
    };
    let v = run(&sc, &mut |_, _, _| {});
    assert!(v["scenario"]["slow_hosts"].as_u64().unwrap() > 0);
    let fast = v["swarm"]["fast_hosts"]["last_s"].as_f64().unwrap();
    let slow = v["swarm"]["slow_hosts"]["last_s"].as_f64().unwrap();
    let limit = v["swarm"]["slow_host_limit_s"].as_f64().unwrap();
    assert!(
        slow >= limit && slow < 1.5 * limit,
        "{slow} against {limit}"
    );
    assert!(fast < slow / 2.0, "fast {fast}, slow {slow}");
}

/// Hosts that die mid-way do not stop the others; a WAN outage longer
/// than the idle timeout heals by itself once the links are back.
#[test]
fn the_rest_finish_through_deaths_and_a_wan_outage() {
    let sc = Scenario {
        size: 64 << 20,
        fail_share: 0.3,
        fail_at: 0.8,
        ..small(1, 10)
    };
    let v = run(&sc, &mut |_, _, _| {});
    let died = v["swarm"]["hosts_died"].as_u64().unwrap();
    assert!(died > 0, "{v}");
    assert_eq!(v["swarm"]["hosts_failed"], 0, "{v}");
    assert_eq!(v["swarm"]["all"]["hosts_done"].as_u64().unwrap() + died, 9);
    let sc = Scenario {
        size: 32 << 20,
        wan_outage: Some((1.0, 15.0)),
        ..small(2, 4)
    };
    let v = run(&sc, &mut |_, _, _| {});
    assert_eq!(v["swarm"]["all"]["hosts_done"], 7, "{v}");
    assert_eq!(v["swarm"]["hosts_failed"], 0, "{v}");
    let last = v["swarm"]["all"]["last_s"].as_f64().unwrap();
    assert!(last > 16.0, "{last}: the remote group waited for the WAN");
}

/// The BitTorrent-like baseline finishes every host, and, knowing no
/// groups, takes more than one copy over each remote group's WAN link
/// where swarm takes one.
#[test]
fn the_bittorrent_baseline_finishes_and_crosses_the_wan_more_than_swarm() {
    let sc = Scenario {
        size: 32 << 20,
        ..small(2, 6)
    };
    let v = run(&sc, &mut |_, _, _| {});
    let bt = &v["bittorrent"];
    assert_eq!(bt["hosts_done"], 11, "{bt}");
    let bt_wan = bt["wan_in_over_s_per_remote_group"][0].as_f64().unwrap();
    let swarm_wan = v["swarm"]["wan_in_over_s_per_remote_group"][0]
        .as_f64()
        .unwrap();
    assert!(swarm_wan < 1.1, "swarm {swarm_wan}");
    assert!(bt_wan > 1.2, "bittorrent {bt_wan}");
    // and no host beats the limit
    assert!(bt["median_over_t_star"].as_f64().unwrap() >= 1.0);
    let none = run(
        &Scenario {
            cascade: false,
            bittorrent: false,
            ..sc
        },
        &mut |_, _, _| {},
    );
    assert!(none["bittorrent"].is_null() && none["cascade"].is_null());
    assert_eq!(
        none["swarm"]["all"], v["swarm"]["all"],
        "the baselines do not touch swarm's run"
    );
}
