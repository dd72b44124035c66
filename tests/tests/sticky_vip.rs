//! Sticky sessions through the VIP in network namespaces ([`Site`] with
//! three backends): 200 sessions are made from the client host, replicated,
//! and the VIP owner is killed (`kill -9`); through the new owner every
//! session still reaches its backend. With `contract = "sync"`, so do the
//! sessions made right up to the kill. Needs root; otherwise skips, saying so.

use raftlb_tests::site::{Options, Site, session};
use raftlb_tests::{root_or_skip, wait};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Entries of pool `pool` in every node's table, as `ctl sticky stats` prints them.
fn entries(site: &Site, via: usize, pool: &str) -> Vec<u64> {
    let out = site.ctl(via, &["--json", "sticky", "stats"]);
    let members: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    members
        .iter()
        .map(|m| {
            m["stats"]["tables"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["pool"] == pool))
                .and_then(|t| t["entries"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_their_backend_when_the_vip_owner_dies() {
    if !root_or_skip(
        "sessions_keep_their_backend_when_the_vip_owner_dies",
        "build network namespaces",
    ) {
        return;
    }
    let mut site = Site::build(Options {
        sticky: true,
        ..Options::default()
    })
    .await;
    let client = site.lab.ns("client");
    let (web, sync) = (SocketAddr::new(site.vip, 8080), SocketAddr::new(site.vip, 8081));

    // 200 async sessions through the VIP, then one replication window:
    // every node holds them.
    let mut made = BTreeMap::new();
    for s in 0..200 {
        let user = format!("async-{s}");
        let backend = session(&client, web, &user).unwrap_or_else(|| panic!("session {user}"));
        made.insert(user, backend);
    }
    let spread: std::collections::BTreeSet<&String> = made.values().collect();
    assert!(spread.len() == 3, "sessions spread over the backends: {spread:?}");
    let owner = site.owner().await;
    let other = (owner + 1) % 3;
    wait::until("200 sessions on every node", Duration::from_secs(10), || {
        let counts = entries(&site, other, "app");
        counts.len() == 3 && counts.iter().all(|n| *n >= 200)
    })
    .await;

    // sync sessions, made through the VIP without pause, across the kill.
    let made_sync = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let maker = {
        let (made_sync, stop, client) = (Arc::clone(&made_sync), Arc::clone(&stop), client.clone());
        std::thread::spawn(move || {
            for s in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let user = format!("sync-{s}");
                if let Some(backend) = session(&client, sync, &user) {
                    made_sync.lock().expect("made").insert(user, backend);
                }
            }
        })
    };
    wait::until("sync sessions under way", Duration::from_secs(10), || {
        made_sync.lock().expect("made").len() >= 50
    })
    .await;
    let before_kill = made_sync.lock().expect("made").len();
    let killed = Instant::now();
    site.nodes[owner].kill();
    wait::value("the VIP answers after the kill", Duration::from_secs(2), || {
        site.answered_since(killed)
    })
    .await;
    // A few sessions through the new owner too, then stop making them.
    wait::until(
        "sync sessions through the new owner",
        Duration::from_secs(5),
        || made_sync.lock().expect("made").len() >= before_kill + 20,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    maker.join().expect("maker");

    for (user, backend) in &made {
        let now = session(&client, web, user);
        assert_eq!(
            now.as_ref(),
            Some(backend),
            "async session {user} after the owner's death"
        );
    }
    let made_sync = made_sync.lock().expect("made").clone();
    for (user, backend) in &made_sync {
        let now = session(&client, sync, user);
        assert_eq!(
            now.as_ref(),
            Some(backend),
            "sync session {user} after the owner's death"
        );
    }
    println!(
        "VIP owner (node {}) killed: {} async sessions and {} sync sessions ({} made before the kill) all kept their backend",
        owner + 1,
        made.len(),
        made_sync.len(),
        before_kill
    );
}
