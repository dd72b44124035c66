//! # raftlb-jepsen
//!
//! A failure-injection harness in the manner of Jepsen, against real
//! `raftlb` processes in network namespaces (the `raftlb-tests` fixtures):
//! clients and a nemesis driven by generators drawn from a seed, every
//! operation recorded as invoke → ok / fail / info, checkers judging the
//! history afterwards.
//!
//! ## Layout
//!
//! - [`history`]: the operation model and its JSONL form.
//! - [`rng`]: the seeded PRNG every random choice comes from.
//! - [`workload`]: W1 admin registers, W2 set, W3 sticky sessions, W4
//!   traffic through the VIP (two clients), the C7 probes after the heal.
//! - [`nemesis`]: process, network, backend and membership faults, and the heal.
//! - [`checker`]: C1 linearizable registers, C2 set, C3 one VIP owner, C4
//!   sticky sessions, C5 failover windows, C6 delivery, C8 panics.
//! - [`scenario`]: one run end to end; [`report`]: what it prints.
//! - [`failpoints`]: nodes built and run with planted bugs; [`prove`]: the
//!   runs showing the checkers catch them.
//!
//! Exit status: 0 valid, 1 a violation, 2 unknown (including: not root);
//! `prove`: 0 when every planted bug was caught and every control run
//! was valid.

mod checker;
mod failpoints;
mod history;
mod nemesis;
mod prove;
mod report;
mod rng;
mod scenario;
mod workload;

use checker::Verdict;
use clap::{Parser, Subcommand};
use nemesis::Fault;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "raftlb-jepsen",
    about = "Failure injection against a raftlb site in network namespaces (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Seed of every random choice (fault schedule, targets, Raft timing, client operations).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Admin client processes of the register workload.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Where each scenario's `<timestamp>-<scenario>/` folder goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// One scenario.
    Run {
        /// Faults to inject, comma-separated (none if empty): kill, pause, partition,
        /// partition-ring, partition-oneway, netem, backend-kill, backend-partition,
        /// member-remove, transfer, drain; or all, backend (both backend faults), member.
        #[arg(long, value_delimiter = ',', default_value = "")]
        nemesis: Vec<String>,
        /// Seconds of workload and faults.
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Bugs to plant, comma-separated: vip-skip-lease-wait,
        /// admin-ack-before-commit (builds raftlb with the `failpoints` feature).
        #[arg(long, value_delimiter = ',', default_value = "")]
        failpoints: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Judges a saved history again (C1, C2, C4 and C5; no root needed).
    Check {
        /// A `history.jsonl` from a results folder.
        history: PathBuf,
    },
    /// The CI set, one scenario after the other: none, kill, pause,
    /// partitions (isolated, ring, one-way), netem, backends (kill,
    /// partition), membership (remove, re-add), handover (transfer, drain),
    /// all.
    Matrix {
        /// Seconds of workload and faults per scenario.
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Bugs to plant in every scenario (as for `run`).
        #[arg(long, value_delimiter = ',', default_value = "")]
        failpoints: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// The proof that the checkers catch planted bugs: vip-skip-lease-wait
    /// under pause and partition must give a C3 violation,
    /// admin-ack-before-commit under partition a C1 violation, and the same
    /// runs without failpoints must be valid.
    Prove {
        /// Seconds of workload and faults per scenario.
        #[arg(long, default_value_t = prove::TIME_LIMIT)]
        time_limit: u64,
        /// Seed of every scenario.
        #[arg(long, default_value_t = prove::SEED)]
        seed: u64,
        /// Only the planted runs, not the control runs without failpoints.
        #[arg(long)]
        no_control: bool,
        /// Where each scenario's `<timestamp>-<scenario>/` folder goes.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
        results: PathBuf,
    },
}

/// `matrix`: (scenario, its `--nemesis` list).
const MATRIX: [(&str, &str); 10] = [
    ("none", ""),
    ("kill", "kill"),
    ("pause", "pause"),
    ("partitions", "partition,partition-ring,partition-oneway"),
    ("netem", "netem"),
    ("backends", "backend-kill,backend-partition"),
    ("membership", "member-remove"),
    ("handover", "transfer,drain"),
    ("upgrade", "upgrade"),
    ("all", "all"),
];

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|id| id == "0"))
        })
        .unwrap_or(false)
}

fn config(
    name: &str,
    faults: Vec<Fault>,
    time_limit: u64,
    common: &Common,
    failpoints: &[String],
) -> scenario::Config {
    let name = match failpoints {
        [] => name.to_string(),
        points => format!("{name}-planted-{}", points.join("+")),
    };
    scenario::Config {
        name,
        faults,
        time_limit: Duration::from_secs(time_limit),
        seed: common.seed,
        clients: common.clients.max(1),
        results: common.results.clone(),
        failpoints: failpoints.to_vec(),
    }
}

/// `check`: C1, C2, C4 and C5 over a saved history.
fn recheck(path: &std::path::Path) -> ExitCode {
    let ops = match history::read_jsonl(path) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("raftlb-jepsen: cannot read the history {}: {e}", path.display());
            return ExitCode::from(Verdict::Unknown.exit_code());
        }
    };
    let checks = [
        checker::linearizable(&ops, workload::KEYS, workload::INITIAL, scenario::SEARCH_BUDGET),
        checker::set::check(&ops),
        checker::sticky::check(&ops),
        checker::failover(&ops),
    ];
    for check in &checks {
        println!("{}: {}\n{}", check.name, check.verdict.word(), check.detail);
    }
    let worst = checks.iter().map(|c| c.verdict).max().unwrap_or(Verdict::Unknown);
    ExitCode::from(worst.exit_code())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let configs = match &cli.command {
        Action::Check { history } => return recheck(history),
        Action::Run {
            nemesis,
            time_limit,
            failpoints,
            common,
        } => {
            let Some(points) = failpoint_list(failpoints) else {
                return ExitCode::from(2);
            };
            let faults = match Fault::parse_list(nemesis) {
                Ok(faults) => faults,
                Err(e) => {
                    eprintln!("raftlb-jepsen: {e}");
                    return ExitCode::from(2);
                }
            };
            let name = if faults.is_empty() {
                "none".to_string()
            } else if faults == Fault::ALL {
                "all".to_string()
            } else {
                faults.iter().map(|f| f.name()).collect::<Vec<_>>().join("+")
            };
            vec![config(&name, faults, *time_limit, common, &points)]
        }
        Action::Matrix {
            time_limit,
            failpoints,
            common,
        } => {
            let Some(points) = failpoint_list(failpoints) else {
                return ExitCode::from(2);
            };
            let mut configs = Vec::new();
            for (name, nemeses) in MATRIX {
                let names: Vec<String> = nemeses.split(',').map(str::to_string).collect();
                match Fault::parse_list(&names) {
                    Ok(faults) => configs.push(config(name, faults, *time_limit, common, &points)),
                    Err(e) => {
                        eprintln!("raftlb-jepsen: matrix scenario {name}: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            configs
        }
        Action::Prove {
            time_limit,
            seed,
            no_control,
            results,
        } => {
            let common = Common {
                seed: *seed,
                clients: 4,
                results: results.clone(),
            };
            let runs = prove::runs(!*no_control);
            let configs = runs
                .iter()
                .map(|r| config(r.name, r.faults.to_vec(), *time_limit, &common, &r.failpoints()))
                .collect();
            return run_all(configs, Some(&runs));
        }
    };
    run_all(configs, None)
}

/// The failpoints asked for, checked; `None` (after saying why) if unknown.
fn failpoint_list(names: &[String]) -> Option<Vec<String>> {
    failpoints::parse(names)
        .inspect_err(|e| eprintln!("raftlb-jepsen: --failpoints: {e}"))
        .ok()
}

/// Runs `configs` one after the other and prints each report, then the
/// matrix (several) or the proof (`prove`, one expectation per config).
fn run_all(configs: Vec<scenario::Config>, proof: Option<&[prove::Run]>) -> ExitCode {
    if !is_root() {
        eprintln!(
            "raftlb-jepsen: must run as root: it builds network namespaces, moves the VIP, \
             sends signals and sets nftables rules (try sudo -E). Nothing was run."
        );
        return ExitCode::from(Verdict::Unknown.exit_code());
    }
    if let Err(e) = configs.iter().try_for_each(|c| nemesis::preflight(&c.faults)) {
        eprintln!("raftlb-jepsen: {e}. Nothing was run.");
        return ExitCode::from(Verdict::Unknown.exit_code());
    }
    configs.iter().for_each(|c| nemesis::prepare(&c.faults));
    if configs.iter().any(|c| !c.failpoints.is_empty()) {
        match failpoints::binary() {
            Ok(bin) => println!("failpoints binary: {}", bin.display()),
            Err(e) => {
                eprintln!("raftlb-jepsen: cannot build raftlb with failpoints: {e}");
                return ExitCode::from(Verdict::Unknown.exit_code());
            }
        }
    }
    let mut reports = Vec::new();
    for config in &configs {
        let report = scenario::run(config);
        println!("{}", report.text);
        reports.push(report);
    }
    if let Some(runs) = proof {
        let (text, code) = prove::judge(runs, &reports);
        println!("{text}");
        return ExitCode::from(code);
    }
    let results: Vec<(String, Verdict)> = reports.into_iter().map(|r| (r.name, r.verdict)).collect();
    if results.len() > 1 {
        println!("== matrix");
        for (name, verdict) in &results {
            println!("{name:<10} {}", verdict.word());
        }
    }
    let worst = results.iter().map(|(_, v)| *v).max().unwrap_or(Verdict::Unknown);
    ExitCode::from(worst.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_is_at_least_eight_scenarios_that_parse_and_cover_every_fault() {
        assert!(MATRIX.len() >= 8);
        let mut covered = Vec::new();
        for (name, nemeses) in MATRIX {
            let names: Vec<String> = nemeses.split(',').map(str::to_string).collect();
            let faults = Fault::parse_list(&names).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(faults.is_empty(), name == "none", "{name}");
            covered.extend(faults);
        }
        assert!(Fault::ALL.iter().all(|f| covered.contains(f)));
    }
}
