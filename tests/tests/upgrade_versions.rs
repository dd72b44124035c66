//! Rolling upgrades across format versions (see `raftlb_config::format`),
//! with real binaries of both versions:
//! - a site of three nodes built from the last commit before versions
//!   (format 1, [`pinned::FORMAT_ONE`]) is upgraded node by node to this
//!   build while a patient client requests the VIP (HTTP and TCP), admin
//!   writes commit and sticky sessions are made: no request fails (but at
//!   most two that a format-1 VIP owner's own handover resets, a bug of
//!   that release), every
//!   acknowledged write and every session is still there, every data dir's
//!   log moves out of sled, and the cluster version rises (to this build's
//!   newest) only once the last node runs this build (root:
//!   network namespaces; otherwise skips, saying so);
//! - a node whose binary is more than one version newer, or too old, for
//!   the cluster's version refuses to join, saying which versions it needs,
//!   and a command newer than the cluster's version is refused with the
//!   members still older named.

use raftlb_config::format::{CURRENT, OLDEST};
use raftlb_config::{Command, PoolSpec};
use raftlb_tests::admin::Admin;
use raftlb_tests::backends::HttpBackend;
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::pinned;
use raftlb_tests::process::{binary, build_with_features};
use raftlb_tests::site::{BALANCERS, CLUSTER, Load, Options, Site, session};
use raftlb_tests::vip_load::failures;
use raftlb_tests::{netns, root_or_skip, wait};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cluster version as node `i` reports it (`ctl status`).
fn cluster_version(site: &Site, i: usize) -> Option<u64> {
    let json = site.ctl(i, &["--json", "status"]);
    serde_json::from_str::<serde_json::Value>(&json).ok()?["cluster_version"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_from_format_one_loses_nothing() {
    if !root_or_skip("a rolling upgrade across versions", "build network namespaces") {
        return;
    }
    let old = pinned::binary(pinned::FORMAT_ONE);
    let new = binary();
    let mut site = Site::build(Options {
        sticky: true,
        tcp: true,
        node_binary: Some(old),
        ..Options::default()
    })
    .await;
    assert_eq!(cluster_version(&site, 0), Some(1), "a cluster of format-1 nodes");
    // A client like curl: it waits out a SYN retransmission (3 s).
    let patient = Load::start_on(
        &site.lab.ns("client"),
        site.vip,
        &[8080, 9000],
        Duration::from_secs(3),
        1 << 32,
    );
    let began = Instant::now();
    wait::value("the patient client is answered", Duration::from_secs(5), || {
        patient.answered_since(began)
    })
    .await;
    let writer = PoolWriter::start(&site);
    let sessions = Sessions::start(&site);
    wait::until(
        "sessions made before the upgrade",
        Duration::from_secs(30),
        || sessions.count() >= 20,
    )
    .await;

    let upgrading = Instant::now();
    let mut owners = vec![site.owner().await];
    // When a format-1 process that owned the VIP was stopped, and exited.
    let mut old_owner_stops = Vec::new();
    // The stopped format-1 processes' logs, shown if a request fails.
    let mut stopped_logs = Vec::new();
    for i in 0..BALANCERS.len() {
        let step = Instant::now();
        site.nodes[i].terminate();
        let status = site.nodes[i].wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "node {} stopped: {status}", i + 1);
        if owners.last() == Some(&i) {
            old_owner_stops.push((step, Instant::now()));
        }
        stopped_logs.push(format!(
            "--- node {} (format 1) ---\n{}",
            i + 1,
            site.nodes[i].log()
        ));
        site.nodes[i] = site.spawn_as(i, &new);
        site.nodes[i].ready(&[]).await;
        wait::value("the upgraded node catches up", Duration::from_secs(20), || {
            site.caught_up(i).then_some(())
        })
        .await;
        let log = site.nodes[i].log();
        assert!(
            log.contains("upgraded the data dir's format in place")
                && log.contains("moved the Raft log out of sled")
                && log.contains("removed sled's copy of the Raft log"),
            "node {}: the format-1 data dir was not upgraded (its log moved out of sled):\n{log}",
            i + 1
        );
        owners.push(site.owner().await);
        let version = cluster_version(&site, i);
        println!(
            "node {} upgraded in {:?}; cluster version {version:?}; VIP on node {}",
            i + 1,
            step.elapsed(),
            owners.last().map_or(0, |o| o + 1)
        );
        if i + 1 < BALANCERS.len() {
            assert_eq!(
                version,
                Some(1),
                "the version rose while a format-1 node was left"
            );
        }
    }
    wait::value(
        "the cluster version rises to this build's",
        Duration::from_secs(10),
        || {
            (0..BALANCERS.len())
                .all(|i| cluster_version(&site, i) == Some(u64::from(CURRENT)))
                .then_some(())
        },
    )
    .await;
    let upgrade = upgrading.elapsed();
    // Sessions made on the upgraded cluster too.
    let before = sessions.count();
    wait::until("sessions made after the upgrade", Duration::from_secs(30), || {
        sessions.count() >= before + 10
    })
    .await;

    let written = writer.stop();
    let made = sessions.stop();
    let attempts = patient.finish();
    // A format-1 VIP owner handing over lets the VIP go a few ms after it
    // starts refusing new SYNs, not at its lease's end (fixed in e32ae85,
    // which the pinned binary predates): a request that connected in
    // between can be reset. Those, within such a handover, are counted
    // apart; every other request must be answered.
    let in_old_handover = |a: &&raftlb_tests::site::Attempt| {
        old_owner_stops
            .iter()
            .any(|(stopped, exited)| a.start + Duration::from_millis(50) >= *stopped && a.start <= *exited)
    };
    let (old_bug, failed_attempts): (Vec<_>, Vec<_>) =
        attempts.iter().filter(|a| !a.ok).partition(in_old_handover);
    let failed = failed_attempts.len();
    if !old_bug.is_empty() {
        println!(
            "{} requests reset while a format-1 VIP owner handed over (its known bug): {:?}",
            old_bug.len(),
            old_bug.iter().map(|a| &a.outcome).collect::<Vec<_>>()
        );
    }
    assert!(
        old_bug.len() <= 2,
        "{} requests failed while a format-1 owner handed over: more than its bug's window explains",
        old_bug.len()
    );
    let moves = owners.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "rolling upgrade of 3 nodes, format 1 → {CURRENT}, in {upgrade:?}: {} requests, {failed} failed, {} admin writes, \
         {} sessions, VIP moved {moves} times",
        attempts.len(),
        written.len(),
        made.len()
    );
    assert!(attempts.len() > 100, "only {} requests", attempts.len());
    if failed > 0 {
        let now: Vec<String> = (site.nodes.iter().enumerate())
            .map(|(i, node)| format!("--- node {} (upgraded) ---\n{}", i + 1, node.log()))
            .collect();
        eprintln!("{}\n{}", stopped_logs.join("\n"), now.join("\n"));
    }
    assert_eq!(
        failed,
        0,
        "requests failed during the rolling upgrade: {:#?}",
        failures(&failed_attempts.into_iter().cloned().collect::<Vec<_>>())
    );

    // Every acknowledged write is in the state.
    let node = format!("{}:7000", site.lab.address(BALANCERS[0]));
    let (state, _) = netns::on_host(&site.lab.ns("client"), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async move {
                Admin::with_credentials(&node, Duration::from_secs(5), CLUSTER)
                    .read(false)
                    .await
            })
    })
    .expect("a linearizable read");
    assert!(
        written.len() > 10,
        "only {} admin writes went through",
        written.len()
    );
    let lost: Vec<&String> = written
        .iter()
        .filter(|name| state.spec().pool(name).is_none())
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // Every session answered before still reaches its backend.
    assert!(made.len() >= 30, "only {} sessions were made", made.len());
    let to = SocketAddr::new(site.vip, 8081);
    let ns = site.lab.ns("client");
    for (user, backend) in &made {
        let now = wait::value("the session answers", Duration::from_secs(5), || {
            session(&ns, to, user)
        })
        .await;
        assert_eq!(&now, backend, "session {user} moved");
    }
}

/// Pools `w0`, `w1`, … added through every node in turn from the client
/// host until stopped; the names whose write was acknowledged.
struct PoolWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl PoolWriter {
    fn start(site: &Site) -> PoolWriter {
        let template = raftlb_config::parse(
            "template.toml",
            "[node]\nid = 1\ndata_dir = \"d\"\n\n[[pool]]\nname = \"w\"\nbackends = [{ address = \"198.18.0.5:80\" }]\n",
        )
        .expect("a valid template")
        .cluster
        .pools
        .remove(0);
        let nodes: Vec<String> = BALANCERS
            .iter()
            .map(|b| format!("{}:7000", site.lab.address(b)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, flag) = (site.lab.ns("client"), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            netns::enter(&ns);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let mut written = Vec::new();
                for n in 0.. {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{n}");
                    let pool = PoolSpec {
                        name: name.clone(),
                        ..template.clone()
                    };
                    let mut admin =
                        Admin::with_credentials(&nodes[n % nodes.len()], Duration::from_secs(3), CLUSTER);
                    if admin
                        .write(&Command::AddPool(pool))
                        .await
                        .is_ok_and(|w| w.applied)
                    {
                        written.push(name);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                written
            })
        });
        PoolWriter {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("the writer thread"))
            .unwrap_or_default()
    }
}

impl Drop for PoolWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sessions made on the VIP's `sync` listener (8081, `contract = "sync"`:
/// committed before they are answered) and revisited, until stopped; each
/// answered session with its backend. A session whose backend changes is
/// a lost session, and fails the test.
struct Sessions {
    stop: Arc<AtomicBool>,
    made: Arc<Mutex<BTreeMap<String, String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sessions {
    fn start(site: &Site) -> Sessions {
        let stop = Arc::new(AtomicBool::new(false));
        let made: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let to = SocketAddr::new(site.vip, 8081);
        let (ns, flag, record) = (site.lab.ns("client"), Arc::clone(&stop), Arc::clone(&made));
        let thread = std::thread::spawn(move || {
            for n in 0u64.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                // A new session, then a visit to an earlier one.
                let user = format!("user-{n}");
                if let Some(backend) = session(&ns, to, &user) {
                    record.lock().expect("sessions").insert(user, backend);
                }
                let earlier = {
                    let made = record.lock().expect("sessions");
                    made.iter()
                        .nth((n as usize * 7) % made.len().max(1))
                        .map(|(u, b)| (u.clone(), b.clone()))
                };
                if let Some((user, backend)) = earlier
                    && let Some(now) = session(&ns, to, &user)
                {
                    assert_eq!(now, backend, "session {user} moved during the upgrade");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sessions {
            stop,
            made,
            thread: Some(thread),
        }
    }

    /// How many sessions were answered so far.
    fn count(&self) -> usize {
        self.made.lock().expect("sessions").len()
    }

    fn stop(mut self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("no session moved");
        }
        self.made.lock().expect("sessions").clone()
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_incompatible_versions_are_refused_with_a_sentence() {
    let backend = HttpBackend::start("a").await;
    let mut cluster = Cluster::start(3, &http_seed("round_robin", &[backend.address])).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let leader = cluster.index_of(leader);
    // Every member runs this build: the version rises by itself.
    let mut admin = cluster.admin(leader, Duration::from_secs(5));
    let raised = Instant::now();
    wait::value_of(
        "the cluster version rises to this build's",
        Duration::from_secs(10),
        || {
            let mut admin = admin.clone();
            async move {
                let status = admin.status().await.ok()?;
                (status.cluster_version == u32::from(CURRENT)).then_some(())
            }
        },
    )
    .await;
    println!(
        "cluster version {CURRENT} within {:?} of a leader",
        raised.elapsed()
    );

    // A command newer than the cluster runs names the members still older.
    let refused = admin
        .write(&Command::SetClusterVersion(CURRENT + 1))
        .await
        .expect_err("a version no member reads is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    for id in 1..=3 {
        assert!(
            refused
                .message()
                .contains(&format!("node {id} (formats {OLDEST}–{CURRENT})")),
            "{}",
            refused.message()
        );
    }

    // Nodes of a failpoints build that pretend to read other formats.
    let pretending = build_with_features("failpoints");
    let newer = format!("{0}-{0}", CURRENT + 1);
    let older = format!("{0}-{0}", CURRENT - 1);
    for (id, formats, sentence) in [
        (4, newer.as_str(), "it is more than one version newer"),
        (5, older.as_str(), "it is too old to join"),
    ] {
        let env = [("RAFTLB_TEST_FORMATS".to_string(), formats.to_string())];
        let joiner = cluster.start_joiner_as(id, &pretending, &env);
        let address = cluster.members[joiner].raft.clone();
        // The call says why, and the joiner is taken out again.
        let asked = Instant::now();
        let refused = cluster
            .admin(leader, Duration::from_secs(20))
            .add_member(id, &address)
            .await
            .expect_err("an incompatible joiner is refused");
        println!(
            "ctl member add {id} answered in {:?}: {}",
            asked.elapsed(),
            refused.message()
        );
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains(sentence), "{}", refused.message());
        assert!(
            refused.message().contains(&format!("node {id} refuses to join"))
                && refused.message().ends_with("it is not a member"),
            "{}",
            refused.message()
        );
        let members = admin.status().await.expect("status").members;
        assert_eq!(
            members.iter().map(|m| m.id).collect::<Vec<_>>(),
            [1, 2, 3],
            "the refusing joiner is no member"
        );
        let process = cluster.members[joiner].process.as_ref().expect("running");
        let logged = wait::value("the joiner refuses", Duration::from_secs(15), || {
            let log = process.log();
            log.lines()
                .find(|line| line.contains("refusing to join the cluster"))
                .map(str::to_string)
        })
        .await;
        println!("node {id} (formats {formats}): {logged}");
        assert!(logged.contains(sentence), "{logged}");
        assert!(
            logged.contains(&format!("the cluster runs format {CURRENT}")),
            "{logged}"
        );
        let status = cluster
            .admin(joiner, Duration::from_secs(2))
            .status()
            .await
            .expect("status");
        assert_eq!(status.applied_index, 0, "the refusing node applied nothing");
        cluster.kill(joiner);
    }
    drop(backend);
}
