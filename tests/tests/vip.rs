//! The VIP in network namespaces ([`Site`]): the Raft leader owns
//! 198.18.0.100 (or 2001:2::100) while a client requests it every 5 ms and
//! a prober on the client's host asks who has it every 5 ms (ARP, or IPv6
//! neighbour solicitations). The owner is killed (`kill -9`), frozen
//! (`SIGSTOP` past its lease) or cut off from the other balancers (Raft
//! port dropped, clients still reach it); each time the VIP must answer
//! again within the bound, and no two hosts may ever answer for it at
//! once. Needs root; otherwise skips, saying so.

use raftlb_tests::failover::{FAILOVER_BOUND, finish, kill_trials, probe, probe_for};
use raftlb_tests::process::stopped;
use raftlb_tests::site::{BALANCERS, Options, Site, VIP, get_from_client, signal};
use raftlb_tests::{netns, root_or_skip, wait};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Kill trials; `bench/failover.sh` raises it.
fn trials() -> usize {
    std::env::var("RAFTLB_FAILOVER_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(10)
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_hands_the_vip_over_without_overlap() {
    if !root_or_skip("VIP failover after kill -9", "build network namespaces") {
        return;
    }
    let mut site = Site::start().await;
    let arp = probe(&site);
    let failovers = kill_trials(&mut site, trials(), None).await;
    finish(
        &site,
        arp,
        "kill -9 of the VIP owner → answer via the VIP",
        failovers,
        trials(),
    );
}

/// The timings a LAN deployment tunes to, where the lease proof's margins
/// are thinnest (a sixth of 50 ms): a successor that answered its
/// predecessor's last round just before it stood once claimed the VIP
/// while the predecessor's fence still answered ARP (71 ms of overlap in
/// 20 trials, bench/failover.sh of 2026-12-07).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuned_timings_keep_kill_handovers_free_of_overlap() {
    if !root_or_skip(
        "VIP failover after kill -9, tuned timings",
        "build network namespaces",
    ) {
        return;
    }
    let mut site = Site::build(Options {
        raft_timing: Some(("15ms".to_string(), "50ms".to_string())),
        ..Options::default()
    })
    .await;
    let arp = probe(&site);
    let failovers = kill_trials(&mut site, 20, None).await;
    finish(
        &site,
        arp,
        "heartbeat 15ms, election timeout 50ms: kill -9 of the owner → answer via the VIP",
        failovers,
        20,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_vip_fails_over_after_a_kill_without_overlap() {
    if !root_or_skip("IPv6 VIP failover after kill -9", "build network namespaces") {
        return;
    }
    let mut site = Site::start_v6().await;
    let ndp = probe(&site);
    let failovers = kill_trials(&mut site, 5, None).await;
    // Each claim sent its unsolicited neighbour advertisements.
    for node in &site.nodes {
        let log = node.log();
        assert!(!log.contains("VIP announcement not sent"), "{log}");
    }
    finish(
        &site,
        ndp,
        "IPv6: kill -9 of the VIP owner → answer via [2001:2::100]:8080",
        failovers,
        5,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_is_fenced_and_does_not_reclaim_when_it_resumes() {
    if !root_or_skip("VIP frozen owner", "build network namespaces") {
        return;
    }
    frozen_owner(
        Site::start().await,
        "SIGSTOP of the VIP owner → answer via the VIP",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_ipv6_owner_stops_advertising_and_does_not_reclaim() {
    if !root_or_skip("IPv6 VIP frozen owner", "build network namespaces") {
        return;
    }
    frozen_owner(
        Site::start_v6().await,
        "IPv6: SIGSTOP of the VIP owner → answer via the VIP",
    )
    .await;
}

/// Freezes the VIP owner past its lease: another node must answer, no two
/// hosts may answer ARP/NDP at once, and the resumed node must not reclaim.
async fn frozen_owner(site: Site, what: &str) {
    let arp = probe(&site);
    let frozen = site.owner().await;
    let pid = site.nodes[frozen].pid();
    signal(pid, "STOP");
    // Signals land asynchronously: the clock starts once it is stopped.
    wait::value("the owner stops", Duration::from_secs(1), || {
        stopped(pid).then_some(())
    })
    .await;
    let stopped = Instant::now();
    let answered = wait::value("an answer while the owner is frozen", FAILOVER_BOUND, || {
        site.answered_since(stopped)
    })
    .await;
    // Frozen for 5 s, far past its lease.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(stopped.elapsed())).await;
    let owner = site
        .holders()
        .into_iter()
        .find(|h| *h != frozen)
        .expect("a new owner while the old one is frozen");
    signal(pid, "CONT");
    // The resumed node finds it lost leadership and drops the stale address.
    wait::value("the resumed node lets go", Duration::from_secs(2), || {
        (site.holders() == [owner]).then_some(())
    })
    .await;
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(site.holders(), [owner], "the resumed node reclaimed the VIP");
    assert!(
        site.answered_since(resumed).is_some(),
        "the VIP stopped answering"
    );

    finish(&site, arp, what, vec![answered - stopped], 1);
}

/// Drops the Raft port (7000) both ways between `host` and the others (its
/// own `ctl` still reaches it over loopback), or heals it.
fn cut_raft(site: &Site, host: &str, cut: bool) {
    let rules = if cut {
        "table inet cut {\n\
           chain in { type filter hook input priority -200; iifname != \"lo\" tcp dport 7000 drop; iifname != \"lo\" tcp sport 7000 drop; }\n\
           chain out { type filter hook output priority -200; oifname != \"lo\" tcp dport 7000 drop; oifname != \"lo\" tcp sport 7000 drop; }\n\
         }\n"
    } else {
        "delete table inet cut\n"
    };
    netns::nft(&site.lab.ns(host), rules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_owner_lets_go_and_another_takes_over() {
    if !root_or_skip("VIP isolated owner", "build network namespaces") {
        return;
    }
    let site = Site::start().await;
    let arp = probe(&site);
    let isolated = site.owner().await;
    let cut = Instant::now();
    cut_raft(&site, BALANCERS[isolated], true);
    // It may serve clients until its lease runs out; then another node
    // must hold the VIP and answer.
    let owner = wait::value("another node holds the VIP", FAILOVER_BOUND, || {
        match site.holders().as_slice() {
            [one] if *one != isolated => Some(*one),
            _ => None,
        }
    })
    .await;
    let moved = Instant::now();
    let answered = wait::value("an answer from the new owner", FAILOVER_BOUND, || {
        site.answered_since(moved)
    })
    .await;
    cut_raft(&site, BALANCERS[isolated], false);
    // Healed, it rejoins as a follower and does not take the VIP back.
    wait::value("the healed node catches up", Duration::from_secs(10), || {
        site.caught_up(isolated).then_some(())
    })
    .await;
    assert_eq!(site.holders(), [owner]);

    finish(
        &site,
        arp,
        "Raft links of the VIP owner cut → answer via the VIP",
        vec![answered - cut],
        1,
    );
}

/// The leader and term `ctl status` on node `i` reports.
fn leader_and_term(site: &Site, i: usize) -> (String, u64) {
    let status = site.ctl(i, &["status"]);
    let first = status.lines().next().unwrap_or_default();
    let leader = first.split("leader ").nth(1).and_then(|l| l.split(' ').next());
    let term = first
        .split("term ")
        .nth(1)
        .and_then(|t| t.split(',').next()?.parse().ok());
    match (leader, term) {
        (Some(leader), Some(term)) => (leader.to_string(), term),
        _ => panic!("no leader and term in `ctl status` of node {}: {status}", i + 1),
    }
}

/// Pre-vote: a follower cut off from the other balancers for many election
/// timeouts finds no majority to vote for it, so it never raises its term;
/// healed, it follows the leader it had. (Without pre-vote it would stand
/// again and again while cut off, and its higher term would depose the
/// healthy leader at the heal: a second outage and a VIP move.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_and_healed_does_not_depose_the_leader() {
    if !root_or_skip("pre-vote after a partition", "build network namespaces") {
        return;
    }
    let site = Site::start().await;
    let owner = site.owner().await;
    let before = leader_and_term(&site, owner);
    let follower = (owner + 1) % BALANCERS.len();
    cut_raft(&site, BALANCERS[follower], true);
    // Cut off for well over ten election timeouts (150 ms each).
    wait::value(
        "the cut-off follower reports no quorum for 2 s",
        Duration::from_secs(10),
        || {
            let status = site.ctl(follower, &["status"]);
            let seconds = status
                .split("no quorum since ")
                .nth(1)?
                .split('(')
                .nth(1)?
                .split(' ')
                .next()?;
            (seconds.parse::<f64>().ok()? >= 2.0).then_some(())
        },
    )
    .await;
    cut_raft(&site, BALANCERS[follower], false);
    wait::value("the healed follower catches up", Duration::from_secs(10), || {
        site.caught_up(follower).then_some(())
    })
    .await;
    for i in [owner, follower] {
        assert_eq!(
            leader_and_term(&site, i),
            before,
            "node {}: the leader or the term changed across the partition",
            i + 1
        );
    }
    assert_eq!(site.holders(), [owner], "the VIP moved");
    println!(
        "a follower cut off for over 2 s and healed: leader {} and term {} unchanged, VIP stayed",
        before.0, before.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_balancers_and_a_witness_fail_over_and_the_witness_never_owns() {
    if !root_or_skip("VIP with a witness", "build network namespaces") {
        return;
    }
    const WITNESS: usize = 2;
    let mut site = Site::start_with(Some(WITNESS)).await;
    let arp = probe(&site);
    let witness_http = SocketAddr::from((site.lab.address(BALANCERS[WITNESS]), 8080));
    assert!(
        !get_from_client(&site, witness_http),
        "a witness serves no traffic"
    );
    let failovers = kill_trials(&mut site, 3, Some(WITNESS)).await;
    finish(
        &site,
        arp,
        "2 balancers + witness, kill -9 of the owner → answer via the VIP",
        failovers,
        3,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_the_survivor_keeps_forwarding_on_its_own_address_and_holds_no_vip() {
    if !root_or_skip("quorum loss", "build network namespaces") {
        return;
    }
    let mut site = Site::start().await;
    let owner = site.owner().await;
    let survivor = (owner + 1) % BALANCERS.len();
    for i in (0..BALANCERS.len()).filter(|i| *i != survivor) {
        site.nodes[i].kill();
    }
    let own_address = SocketAddr::from((site.lab.address(BALANCERS[survivor]), 8080));
    // The VIP is released (only the dead hold it), yet the survivor serves
    // on its own address with its last committed state.
    wait::value("the survivor releases the VIP", Duration::from_secs(2), || {
        (!site.holders().contains(&survivor)).then_some(())
    })
    .await;
    for _ in 0..20 {
        assert!(
            get_from_client(&site, own_address),
            "the survivor stopped forwarding"
        );
    }
    let status = wait::value(
        "ctl status reports the lost quorum",
        Duration::from_secs(5),
        || {
            let text = site.ctl(survivor, &["status"]);
            text.contains("no quorum since").then_some(text)
        },
    )
    .await;
    println!("{status}");
    assert!(
        !site.holders().contains(&survivor),
        "the survivor took the VIP without a quorum"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_quorum_releases_its_vip_by_default() {
    if !root_or_skip("quorum loss, release", "build network namespaces") {
        return;
    }
    leader_loses_quorum(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_quorum_holds_its_vip_with_hold() {
    if !root_or_skip("quorum loss, hold", "build network namespaces") {
        return;
    }
    leader_loses_quorum(true).await;
}

/// Kills both followers of the VIP owner (the leader). With the default
/// `vip_on_quorum_loss = "release"` it must let the VIP go once its lease
/// runs out, and stop answering for it; with `"hold"` it must keep holding
/// and answering for it, well past the lease.
async fn leader_loses_quorum(hold: bool) {
    let mut site = Site::build(Options {
        hold_on_quorum_loss: hold,
        ..Options::default()
    })
    .await;
    let owner = site.owner().await;
    let arp = probe(&site);
    for i in (0..BALANCERS.len()).filter(|i| *i != owner) {
        site.nodes[i].kill();
    }
    let killed = Instant::now();
    // The lease is one election timeout (150 ms); watch 20 times that.
    let window = Duration::from_secs(3);
    if hold {
        while killed.elapsed() < window {
            assert_eq!(
                site.holders(),
                [owner],
                "the VIP left its leader after {:?}",
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let late = killed + window - Duration::from_millis(500);
        assert!(
            site.answered_since(late).is_some(),
            "the held VIP stopped answering"
        );
        let replies = arp.finish();
        assert!(
            replies.iter().any(|r| r.at > late),
            "nobody answered ARP for the held VIP {:?} after the quorum loss",
            window
        );
        println!(
            "vip_on_quorum_loss = \"hold\": node {} still holds and answers the VIP {window:?} after losing its quorum",
            owner + 1
        );
    } else {
        wait::value("the leader releases the VIP", Duration::from_secs(2), || {
            site.holders().is_empty().then_some(())
        })
        .await;
        let released = Instant::now();
        println!(
            "vip_on_quorum_loss = \"release\": node {} released the VIP {:?} after losing its quorum",
            owner + 1,
            released - killed
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(site.holders().is_empty(), "the VIP came back without a quorum");
        assert!(
            site.answered_since(released).is_none(),
            "the released VIP still answered"
        );
        let replies = arp.finish();
        assert!(
            !replies.iter().any(|r| r.at > released),
            "a host answered ARP for the released VIP"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_on_a_missing_interface_is_a_clear_start_error() {
    // No root needed: the interface is looked up before anything changes.
    let config = format!(
        "[node]\nid = 1\ndata_dir = \"data\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n\n\
         [[vip]]\naddress = \"{VIP}/24\"\ninterface = \"nope0\"\n"
    );
    let mut node = raftlb_tests::process::Raftlb::spawn(&config);
    let status = node.wait_exit(Duration::from_secs(10)).await;
    let log = node.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "VIP {VIP}: interface \"nope0\": no interface named \"nope0\""
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_vips_land_one_per_node_and_only_a_dead_nodes_vip_moves() {
    if !root_or_skip("spread VIPs", "build network namespaces") {
        return;
    }
    spread((100..103).map(|n| Ipv4Addr::new(198, 18, 0, n).into()).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_ipv6_vips_land_one_per_node_and_only_a_dead_nodes_vip_moves() {
    if !root_or_skip("spread IPv6 VIPs", "build network namespaces") {
        return;
    }
    spread(
        (0x100..0x103)
            .map(|n| Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, n).into())
            .collect(),
    )
    .await;
}

/// One spread VIP per node; killing the leader moves only its VIP, with no
/// overlap.
async fn spread(vips: Vec<IpAddr>) {
    let prefix = if vips[0].is_ipv4() { 24 } else { 64 };
    let mut site = Site::start_spread(vips.clone()).await;
    // One VIP per node.
    let placed: Vec<usize> = wait::value("one spread VIP per node", Duration::from_secs(10), || {
        let holders: Vec<Vec<usize>> = vips.iter().map(|v| site.holders_of(*v)).collect();
        let single: Vec<usize> = holders.iter().filter(|h| h.len() == 1).map(|h| h[0]).collect();
        let distinct: std::collections::BTreeSet<usize> = single.iter().copied().collect();
        (single.len() == vips.len() && distinct.len() == vips.len()).then_some(single)
    })
    .await;
    // `ctl status` reports the same placement (each node reports what it
    // holds just after adding it, so the report may trail by a moment).
    let expected: Vec<String> = vips
        .iter()
        .zip(&placed)
        .map(|(vip, node)| format!("node {} holds VIP {vip}/{prefix}", node + 1))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = site.ctl(0, &["status"]);
        if expected.iter().all(|line| status.contains(line)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ctl status does not show {expected:?} within 5 s:\n{status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Kill the leader, the hardest case: a new leader must move only the
    // VIP the dead node held, not take the others before it hears their
    // owners ask.
    let victim = site.leader_seen_by(0).expect("a leader");
    let moving_index = placed
        .iter()
        .position(|n| *n == victim)
        .expect("the leader holds a VIP");
    let moving = vips[moving_index];
    let arp = probe_for(&site, moving);
    wait::value("the prober sees the VIP", Duration::from_secs(2), || {
        (!arp.replies().is_empty()).then_some(())
    })
    .await;
    let killed = Instant::now();
    site.nodes[victim].kill();
    let new_owner = wait::value(
        "the dead node's VIP on a live node",
        FAILOVER_BOUND,
        || match site
            .holders_of(moving)
            .into_iter()
            .filter(|h| *h != victim)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [one] => Some(*one),
            _ => None,
        },
    )
    .await;
    let moved_after = killed.elapsed();
    // Give the prober time to see the new owner answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, vip) in vips.iter().enumerate().filter(|(i, _)| *i != moving_index) {
        assert_eq!(
            site.holders_of(*vip),
            [placed[i]],
            "VIP {vip} moved although its node lives"
        );
    }
    println!(
        "spread: node {}'s VIP {moving} on node {} after {moved_after:?}",
        victim + 1,
        new_owner + 1
    );
    finish(
        &site,
        arp,
        "spread VIP of a killed node → held by a live node",
        vec![moved_after],
        1,
    );
    site.restart(victim).await;
}
