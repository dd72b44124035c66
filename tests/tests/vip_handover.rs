//! Planned handover in network namespaces ([`Site`]): `ctl leader
//! transfer` and `ctl node drain` move leadership and the VIP while a
//! patient client (one that waits out a SYN retransmission, as curl or a
//! browser does: the handing-over node drops new SYNs while its requests
//! finish, keeping the VIP until its lease runs out) requests the VIP all
//! along and eight admin writers commit weight changes through every node;
//! not one request may fail. Needs root; otherwise skips, saying so.

use raftlb_config::Command;
use raftlb_tests::admin::Admin;
use raftlb_tests::site::{BALANCERS, CLUSTER, Load, Site};
use raftlb_tests::{netns, root_or_skip, wait};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The bound on the VIP reaching the new leader.
const FAILOVER_BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_transfer_and_drain_fail_no_request() {
    if !root_or_skip("VIP planned handover", "build network namespaces") {
        return;
    }
    let mut site = Site::start().await;
    // A client like curl or a browser: it waits out a SYN retransmission
    // (1 s) rather than giving up after 100 ms.
    let patient = Load::start(&site.lab.ns("client"), site.vip, Duration::from_secs(3));
    let began = Instant::now();
    wait::value("the patient client is answered", Duration::from_secs(5), || {
        patient.answered_since(began)
    })
    .await;
    // Admin writes all along, as an operator's automation makes them: an
    // entry appended while the leader steps aside renews the followers'
    // lease on it, and the target used to lose the election (jepsen's
    // handover scenario); now such a write waits for the handover.
    let writer = AdminWriter::start(&site);

    // Transfer: the VIP follows leadership to the chosen node.
    let old = site.owner().await;
    let to = (old + 1) % BALANCERS.len();
    let transferred = Instant::now();
    let said = site.ctl(to, &["leader", "transfer", "--to", &(to + 1).to_string()]);
    assert!(
        said.contains(&format!("node {} is the leader now", to + 1)),
        "{said}"
    );
    let owner = wait::value("the VIP on the new leader", FAILOVER_BOUND, || {
        (site.holders() == [to]).then_some(to)
    })
    .await;
    println!(
        "leader transfer → VIP on the new leader after {:?}",
        transferred.elapsed()
    );

    // Drain the new owner: leadership and VIP move on, then it exits cleanly.
    let drained = Instant::now();
    let said = site.ctl(old, &["node", "drain", &(owner + 1).to_string()]);
    assert!(said.contains("is draining"), "{said}");
    let status = site.nodes[owner].wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "the drained node's exit: {status}");
    let next = site.owner().await;
    assert_ne!(next, owner);
    // Each planned handover first stopped new connections on the VIP, and
    // then kept it until its lease ran out, so that requests already on
    // their way (a connection made just before the SYNs were dropped)
    // reached it: letting it go at once reset such a request in jepsen's
    // upgrade scenario.
    for (node, what) in [(old, "transfer"), (owner, "drain")] {
        let log = site.nodes[node].log();
        let Some(handing) = log.find("handing over: no new connections on the VIPs") else {
            panic!(
                "node {} took new connections until its lease ran out ({what})",
                node + 1
            );
        };
        let release = log[handing..].lines().find(|l| l.contains("VIP released"));
        assert!(
            release.is_some_and(|l| l.contains("the lease ran out")),
            "node {} let the VIP go before its lease ran out ({what}): {release:?}",
            node + 1
        );
    }
    println!("node drain → exited after {:?}", drained.elapsed());

    // Let the patient client finish whatever it had in flight.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (requests, failed) = patient.counts_since(began);
    let written = writer.stop();
    println!(
        "planned transfer and drain under load and {written} admin writes: {requests} requests, {failed} failed"
    );
    assert!(written > 20, "only {written} admin writes went through");
    assert!(
        requests > 100,
        "only {requests} requests: the load was not constant"
    );
    if failed > 0 {
        let at = |t: Instant| t.saturating_duration_since(began);
        println!(
            "transfer at {:?}, drain at {:?}; failed requests:",
            at(transferred),
            at(drained)
        );
        for a in patient.attempts().iter().filter(|a| !a.ok && a.start > began) {
            let connected = a.connected.map(at);
            println!(
                "  #{} {:?}..{:?} (connected {connected:?}): {}",
                a.id,
                at(a.start),
                at(a.end),
                a.outcome
            );
        }
    }
    assert_eq!(failed, 0, "requests failed during a planned handover");
}

/// Weight changes to pool `app`'s backend, written by [`WRITERS`]
/// concurrent clients from the client host through each node in turn
/// until stopped.
const WRITERS: usize = 8;

struct AdminWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl AdminWriter {
    fn start(site: &Site) -> AdminWriter {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let nodes: Vec<String> = BALANCERS
            .iter()
            .map(|b| format!("{}:7000", site.lab.address(b)))
            .collect();
        let backend = SocketAddr::new(site.lab.address("backend").into(), 80);
        let (ns, flag) = (site.lab.ns("client"), std::sync::Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            netns::enter(&ns);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                // Several writers at once, as in jepsen's handover scenario:
                // one at a time left the target's log caught up at its vote.
                let mut writers = tokio::task::JoinSet::new();
                for writer in 0..WRITERS {
                    let (nodes, flag) = (nodes.clone(), std::sync::Arc::clone(&flag));
                    writers.spawn(async move {
                        let mut written = 0;
                        for n in writer.. {
                            if flag.load(Ordering::Relaxed) {
                                break;
                            }
                            let timeout = Duration::from_secs(2);
                            let mut admin =
                                Admin::with_credentials(&nodes[n % nodes.len()], timeout, CLUSTER);
                            let weight = 1 + u32::try_from(n % 5).unwrap_or(0);
                            let command = Command::SetWeight {
                                pool: "app".to_string(),
                                address: backend,
                                weight,
                            };
                            if admin.write(&command).await.is_ok_and(|w| w.applied) {
                                written += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        written
                    });
                }
                let mut written = 0;
                while let Some(done) = writers.join_next().await {
                    written += done.unwrap_or(0);
                }
                written
            })
        });
        AdminWriter {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops writing; how many writes were applied.
    fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the writer thread"))
    }
}

impl Drop for AdminWriter {
    /// A failed test stops the writer too, before its lab goes.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
