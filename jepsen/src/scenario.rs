//! One scenario, end to end: builds the site (3 balancers, a client host,
//! a backend host with three backends behind a sticky pool), adds the
//! register and set pools, starts the ARP prober, the workloads (W1
//! registers, W2 set, W3 sticky sessions, W4 VIP traffic) and the nemesis
//! for the time limit, heals everything, checks the cluster after the heal
//! and reads the set, then judges the history and writes it, the node logs
//! and the report to the scenario's results folder.
//! A harness failure (a panic in a fixture: the site never came up, a
//! restarted node never served) makes the run `unknown`, never `valid`.

use crate::checker::{self, Check, Verdict, owner};
use crate::failpoints;
use crate::history::{self, History, Op};
use crate::nemesis::{Fault, Nemesis};
use crate::report::Report;
use crate::rng::Rng;
use crate::workload::{self, Healed, set, sticky};
use raftlb_tests::arp::{self, ArpProbe};
use raftlb_tests::backends::Logged;
use raftlb_tests::site::{BALANCERS, Load, Options, Site};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ARP prober's period.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// Each wait after the heal (leader, final write, convergence, VIP).
const HEAL_DEADLINE: Duration = Duration::from_secs(20);
/// The patient VIP client's connect timeout: a SYN retried as browsers do.
const PATIENT_CONNECT: Duration = Duration::from_secs(3);
/// The patient client's first request id (the site's client counts from 0).
const PATIENT_IDS: u64 = 1 << 40;
/// Clients of the set workload (W2).
const SET_CLIENTS: usize = 2;
/// States the linearizability search may explore per key.
pub const SEARCH_BUDGET: usize = 2_000_000;

#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub faults: Vec<Fault>,
    pub time_limit: Duration,
    pub seed: u64,
    pub clients: usize,
    /// Where `<timestamp>-<name>/` is created.
    pub results: PathBuf,
    /// Failpoints the nodes run with (see [`crate::failpoints`]).
    pub failpoints: Vec<String>,
}

/// Runs the scenario on a thread of its own (the site's fixtures are not
/// `Send`), catches a harness panic, writes the results, returns the report.
pub fn run(config: &Config) -> Report {
    let dir = config.results.join(format!("{}-{}", timestamp(), config.name));
    let history = History::new();
    let began = std::time::SystemTime::now();
    let logs: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let outcome = {
        let (config, history, logs) = (config.clone(), history.clone(), Arc::clone(&logs));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(execute(&config, &history, &logs))
        })
        .join()
    };
    let (mut checks, timing) = match outcome {
        Ok(done) => done,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "a panic".to_string());
            let check = Check {
                name: "harness",
                verdict: Verdict::Unknown,
                detail: format!("the run did not finish: {why}"),
            };
            (vec![check], String::new())
        }
    };
    let ops = history.ops();
    if let Err(e) = write_results(&dir, &ops, &logs.lock().unwrap_or_else(|e| e.into_inner())) {
        checks.push(Check {
            name: "results",
            verdict: Verdict::Unknown,
            detail: format!("could not write {}: {e}", dir.display()),
        });
    }
    // The nodes' logs carry wall-clock times; the history counts from here.
    let timing = format!("{timing}; t=0 at {} UTC", time_of_day(began));
    Report::new(config, timing, dir, &ops, checks)
}

/// `at` as `HH:MM:SS.mmm` of its UTC day.
fn time_of_day(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (since.as_secs() % 86_400, since.subsec_millis());
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn write_results(dir: &PathBuf, ops: &[Op], logs: &[(String, String)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    history::write_jsonl(ops, &dir.join("history.jsonl"))?;
    for (name, text) in logs {
        std::fs::write(dir.join(format!("{name}.log")), text)?;
    }
    Ok(())
}

/// The run itself; returns the checks and the Raft timing used.
async fn execute(
    config: &Config,
    history: &History,
    logs: &Mutex<Vec<(String, String)>>,
) -> (Vec<Check>, String) {
    let mut rng = Rng::new(config.seed);
    // Raft's clocks from the seed: heartbeat 40–80 ms, election 3–4 × that.
    let heartbeat = 40 + 10 * rng.below(5);
    let election = 3 * heartbeat + rng.below(heartbeat + 1);
    let timing = format!("heartbeat {heartbeat}ms, election timeout {election}ms");
    let mut site = Site::build(Options {
        raft_timing: Some((format!("{heartbeat}ms"), format!("{election}ms"))),
        node_binary: failpoints::node_binary(&config.failpoints),
        node_env: failpoints::env(&config.failpoints),
        sticky: true,
        session_cookie: true,
        tcp: true,
        ..Options::default()
    })
    .await;
    let nodes: Vec<Ipv4Addr> = BALANCERS.iter().map(|h| site.lab.address(h)).collect();
    let client_ns = site.lab.ns("client");
    let (n, deadline) = (nodes.clone(), Duration::from_secs(10));
    let set_up = workload::in_ns(&client_ns, move || workload::setup(n, deadline)).await;
    if let Ok(Err(why)) | Err(why) = set_up.map_err(|_| "the setup thread panicked".to_string()) {
        let check = Check {
            name: "setup",
            verdict: Verdict::Unknown,
            detail: why,
        };
        return (vec![check], timing);
    }
    let probe = ArpProbe::start(&client_ns, "eth0", site.client_address(), site.vip, PROBE_EVERY);

    let patient = Load::start_on(&client_ns, site.vip, &[8080, 9000], PATIENT_CONNECT, PATIENT_IDS);
    let began = Instant::now();
    let until = began + config.time_limit;
    let (h, n, clients, client_rng) = (history.clone(), nodes.clone(), config.clients, rng.fork(1));
    let registers = workload::in_ns(&client_ns, move || {
        workload::registers(h, n, clients, until, client_rng)
    });
    let (h, n, set_rng) = (history.clone(), nodes.clone(), rng.fork(3));
    let adds = workload::in_ns(&client_ns, move || set::adds(h, n, SET_CLIENTS, until, set_rng));
    let (h, vip, sticky_rng) = (history.clone(), site.vip, rng.fork(4));
    let sessions = workload::in_ns(&client_ns, move || sticky::sessions(h, vip, until, sticky_rng));
    let mut nemesis = Nemesis::new(config.faults.clone(), rng.fork(2), history.clone());
    nemesis.run(&mut site, until).await;
    nemesis.heal(&mut site).await;
    let _ = registers.await;
    let _ = adds.await;
    let _ = sessions.await;

    let healed_at = Instant::now();
    let (h, n) = (history.clone(), nodes.clone());
    let healed = workload::in_ns(&client_ns, move || workload::after_heal(h, n, HEAL_DEADLINE))
        .await
        .unwrap_or_else(|_| Healed {
            problems: vec!["the checking thread panicked".to_string()],
            ..Healed::default()
        });
    let (h, n) = (history.clone(), nodes.clone());
    let _ = workload::in_ns(&client_ns, move || set::final_read(h, n, HEAL_DEADLINE)).await;
    let mut vip_answered = None;
    while vip_answered.is_none() && healed_at.elapsed() < HEAL_DEADLINE {
        vip_answered = site.answered_since(healed_at);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replies = probe.finish();
    let macs: Vec<[u8; 6]> = BALANCERS.iter().map(|b| site.lab.mac(b)).collect();
    let claims: Vec<owner::Claim> = arp::claims(&replies, PROBE_EVERY)
        .into_iter()
        .map(|(mac, from, to)| owner::Claim {
            balancer: macs.iter().position(|m| *m == mac),
            from_ns: history.ns(from),
            to_ns: history.ns(to),
        })
        .collect();
    // The attempts first: every request answered by then was logged by
    // its backend before its answer left.
    let attempts = site.load.attempts();
    let patient = patient.attempts();
    let logged: HashMap<u64, Logged> = site
        .backends()
        .iter()
        .flat_map(|b| b.counters.ids.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .map(|l| (l.id, l))
        .collect();
    let served: HashSet<u64> = logged.keys().copied().collect();
    let forwarded: Vec<owner::Forwarded> = attempts
        .iter()
        .chain(&patient)
        .filter(|a| a.ok && a.start >= began)
        .filter_map(|a| Some((logged.get(&a.id)?, a.connected?)))
        .map(|(l, connected)| owner::Forwarded {
            id: l.id,
            balancer: nodes.iter().position(|n| IpAddr::V4(*n) == l.from),
            at_ns: history.ns(connected),
        })
        .collect();
    for op in workload::vip_ops(history, &attempts, began, "vip")
        .into_iter()
        .chain(workload::vip_ops(history, &patient, began, "patient"))
    {
        history.record(op);
    }
    {
        let mut logs = logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.append(&mut nemesis.logs);
        for (i, node) in site.nodes.iter().enumerate() {
            logs.push((BALANCERS[i].to_string(), node.log()));
        }
    }

    let ops = history.ops();
    let logs = logs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let checks = vec![
        checker::linearizable(&ops, workload::KEYS, workload::INITIAL, SEARCH_BUDGET),
        checker::set::check(&ops),
        owner::check(&claims, &forwarded),
        checker::sticky::check(&ops),
        checker::failover(&ops),
        checker::delivery::check(&ops, &served),
        after_heal(&healed, vip_answered.map(|at| at - healed_at)),
        checker::no_panics(&logs),
    ];
    let checks = checks
        .into_iter()
        .chain(failpoints::check(&config.failpoints, &logs))
        .collect();
    (checks, timing)
}

/// C7 from what the scenario saw after the heal.
fn after_heal(healed: &Healed, vip: Option<Duration>) -> Check {
    let mut problems = healed.problems.clone();
    if vip.is_none() {
        problems.push(format!(
            "no request through the VIP answered within {HEAL_DEADLINE:?}"
        ));
    }
    let seen = format!(
        "leader {}, final write {:?} read back as {:?}, every node applied {:?} with one state, VIP answered after {:?}",
        healed
            .leader
            .map_or("none".to_string(), |l| BALANCERS[l].to_string()),
        healed.final_write,
        healed.final_read,
        healed.converged,
        vip
    );
    Check::judged("C7 one cluster after the heal", problems, seen, true)
}

/// Now in UTC as `YYYYMMDDTHHMMSSZ`.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_timestamp_is_sortable_utc() {
        let t = super::timestamp();
        assert_eq!(t.len(), 16, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[8] == b'T',
            "{t}"
        );
    }
}
