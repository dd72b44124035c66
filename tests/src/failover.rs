//! The failover trials of the namespaced VIP tests and of
//! `bench/failover.sh`: a prober asking who has the VIP, `kill -9` trials
//! timed from the kill to the first answer through the VIP, and the check
//! that no two hosts ever answered for it at once (explained from the
//! balancers' logs when they did).

use crate::arp::{self, ArpProbe};
use crate::site::{Site, percentile};
use crate::wait;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often the prober asks.
pub const PROBE_EVERY: Duration = Duration::from_millis(5);
/// The bound on one failover in the test suite.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(2);

/// Asks who has the site's VIP from the client host (ARP or NDP).
pub fn probe(site: &Site) -> ArpProbe {
    probe_for(site, site.vip)
}

/// Asks who has `vip` from the client host.
pub fn probe_for(site: &Site, vip: IpAddr) -> ArpProbe {
    let client = match vip {
        IpAddr::V4(_) => site.lab.address("client").into(),
        IpAddr::V6(_) => site.lab.address6("client").into(),
    };
    ArpProbe::start(&site.lab.ns("client"), "eth0", client, vip, PROBE_EVERY)
}

/// Prints the failover figures and the overlap.
pub fn report(what: &str, mut samples: Vec<Duration>, overlap: Duration) {
    samples.sort();
    println!(
        "{what}: n={} p50={:?} p99={:?} max={:?}; ARP/NDP overlap {overlap:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

/// Stops the prober, prints the failover figures and the overlap, and
/// asserts the overlap is zero and the VIP was seen moving `moves` times.
pub fn finish(site: &Site, arp: ArpProbe, what: &str, samples: Vec<Duration>, moves: usize) {
    let replies = arp.finish();
    let overlaps = arp::overlaps(&replies, PROBE_EVERY);
    let overlap = overlaps.iter().map(|o| o.to - o.from).sum();
    report(what, samples, overlap);
    let claims = arp::claims(&replies, PROBE_EVERY);
    assert!(
        claims.len() > moves,
        "the prober saw {} claims for {moves} handovers: {claims:?}",
        claims.len()
    );
    assert!(
        overlaps.is_empty(),
        "two hosts answered for the VIP at once:\n{}",
        site.explain(&overlaps)
    );
}

/// `trials` times: kill -9 the VIP owner, time the first answer through the
/// VIP, check exactly one live node holds it (never `never_owner`), restart
/// the killed node.
pub async fn kill_trials(site: &mut Site, trials: usize, never_owner: Option<usize>) -> Vec<Duration> {
    let mut failovers = Vec::new();
    for trial in 0..trials {
        let victim = site.owner().await;
        assert_ne!(
            Some(victim),
            never_owner,
            "trial {trial}: node {victim} owns the VIP"
        );
        let killed = Instant::now();
        site.nodes[victim].kill();
        let answered = wait::value(
            &format!("trial {trial}: an answer after the kill"),
            FAILOVER_BOUND,
            || site.answered_since(killed),
        )
        .await;
        failovers.push(answered - killed);
        let live: Vec<usize> = site.holders().into_iter().filter(|h| *h != victim).collect();
        assert_eq!(
            live.len(),
            1,
            "trial {trial}: live nodes holding the VIP: {live:?}"
        );
        assert_ne!(
            Some(live[0]),
            never_owner,
            "trial {trial}: node {} holds the VIP",
            live[0]
        );
        // The killed node comes back, clears the stale VIP it left, rejoins.
        site.restart(victim).await;
    }
    failovers
}
