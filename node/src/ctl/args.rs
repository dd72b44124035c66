//! The `raftlb ctl` command line (clap derive) and the one mapping that
//! matters from it: a `backend …` subcommand to the replicated
//! [`Command`] it writes. Parsing only; nothing here talks to a node.

use raftlb_config::{AdminState, BackendSpec, Cidr, Command};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long a call may take when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// `member add` waits for the new member to catch up (the server allows it
/// a minute), so without `--timeout` it waits longer than other calls.
pub const DEFAULT_MEMBER_ADD_TIMEOUT: Duration = Duration::from_secs(75);

/// Where `--help` lists the options every subcommand takes.
const GLOBAL: &str = "Global options";

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin address of any node of the cluster (its `[cluster] raft`
    /// address) [default: the ctl config's `node`, else 127.0.0.1:7000].
    #[arg(long, env = "RAFTLB_NODE", global = true, help_heading = GLOBAL, value_name = "ADDR")]
    pub node: Option<String>,
    /// The cluster's CA bundle (PEM), to check the node's certificate.
    #[arg(long = "ca", env = "RAFTLB_CA", global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Your client certificate (`raftlb certs client`), role admin or read.
    #[arg(long = "cert", env = "RAFTLB_CERT", global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long = "key", env = "RAFTLB_KEY", global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// A TOML file with `node`, `ca`, `cert` and `key` (paths relative to
    /// the file); options and their environment variables win over it
    /// [default: ~/.config/raftlb/ctl.toml, if it exists].
    #[arg(long, env = "RAFTLB_CTL_CONFIG", global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub ctl_config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Longest wait for any one call, e.g. "500ms", "30s" [default: 10s; 75s for `member add`].
    #[arg(long, value_parser = parse_timeout, global = true, help_heading = GLOBAL, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Every member's role, Raft state, term and log position, asked of each member.
    Status,
    /// The cluster's listeners.
    Listeners {
        /// Answer from the node's own copy without confirming it is current.
        #[arg(long)]
        stale: bool,
    },
    /// The cluster's pools and their backends.
    Pools {
        /// Only this pool.
        name: Option<String>,
        /// Answer from the node's own copy without confirming it is current.
        #[arg(long)]
        stale: bool,
    },
    /// Show or change what one client may do on a listener.
    #[command(subcommand)]
    Listener(ListenerCommand),
    /// List, add or remove a listener's allowed and denied source networks.
    #[command(subcommand)]
    Acl(AclCommand),
    /// Add, remove, reweight, drain or enable one backend of a pool.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Add, list or remove the TLS certificates https listeners serve.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Hand leadership, and with it the VIPs, to another voter.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Act on one node: drain it before maintenance.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Add or remove a cluster member (a raftlb node).
    #[command(subcommand)]
    Member(MemberCommand),
    /// Make the node asked (--node) snapshot everything it has applied and
    /// purge the log the snapshot covers.
    Snapshot,
    /// Inspect or flush the replicated sticky-session tables.
    #[command(subcommand)]
    Sticky(StickyCommand),
    /// GSLB: each name's sites, their health and the current answer.
    #[command(subcommand)]
    Gslb(GslbCommand),
    /// Show the changes that would make the cluster match a configuration file.
    Diff {
        /// The configuration file whose listeners and pools to compare with.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Make the cluster match a configuration file's listeners and pools, in one atomic write.
    Apply {
        /// The configuration file whose listeners and pools to apply.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ListenerCommand {
    /// Show a listener's per-source limits, or set some: KEY=VALUE pairs
    /// (connections, connection_rate, connection_burst, request_rate,
    /// request_burst, source_prefix, source_prefix_v6; 0 turns a limit off).
    Limits {
        /// The listener's name.
        name: String,
        /// The limits to change, e.g. `request_rate=100 connections=50`.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, u64)>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum AclCommand {
    /// A listener's rules, by network.
    List {
        /// The listener's name.
        listener: String,
        /// Answer from the node's own copy without confirming it is current.
        #[arg(long)]
        stale: bool,
    },
    /// Allow or deny networks (CIDR, or a bare address), in one write;
    /// a network already listed takes the new action.
    Add {
        /// The listener's name.
        listener: String,
        /// Deny these networks.
        #[arg(long, conflicts_with = "allow", required_unless_present = "allow")]
        deny: bool,
        /// Allow these networks (exceptions inside a denied one).
        #[arg(long)]
        allow: bool,
        /// The networks, e.g. 198.51.100.0/24.
        #[arg(value_name = "NETWORK")]
        networks: Vec<Cidr>,
        /// Also every network in this file, one per line (`#` comments).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Remove networks' rules, in one write.
    Remove {
        /// The listener's name.
        listener: String,
        #[arg(value_name = "NETWORK")]
        networks: Vec<Cidr>,
        /// Also every network in this file, one per line (`#` comments).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum BackendCommand {
    /// Each backend with its admin state and every node's health verdict.
    List {
        /// Only this pool.
        pool: Option<String>,
        /// Answer from the node's own copy without confirming it is current.
        #[arg(long)]
        stale: bool,
    },
    /// Add a backend to a pool.
    Add {
        /// The pool's name.
        pool: String,
        /// The backend, IP:PORT.
        address: SocketAddr,
        /// Relative share of traffic, 1 to 1000.
        #[arg(long, default_value_t = BackendSpec::DEFAULT_WEIGHT, value_parser = parse_weight)]
        weight: u32,
        /// enabled, drain or maintenance.
        #[arg(long, default_value = "enabled", value_parser = parse_admin_state)]
        state: AdminState,
    },
    /// Remove a backend from a pool.
    Remove {
        /// The pool's name.
        pool: String,
        /// The backend, IP:PORT.
        address: SocketAddr,
    },
    /// Set a backend's weight (1 to 1000).
    Weight {
        /// The pool's name.
        pool: String,
        /// The backend, IP:PORT.
        address: SocketAddr,
        /// The new weight.
        #[arg(value_parser = parse_weight)]
        weight: u32,
    },
    /// Take no new work on a backend; what is in flight finishes.
    Drain {
        /// The pool's name.
        pool: String,
        /// The backend, IP:PORT.
        address: SocketAddr,
    },
    /// Let a backend take new work again.
    Enable {
        /// The pool's name.
        pool: String,
        /// The backend, IP:PORT.
        address: SocketAddr,
    },
    /// Take a backend out entirely, sticky sessions included.
    Maintenance {
        /// The pool's name.
        pool: String,
        /// The backend, IP:PORT.
        address: SocketAddr,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    Add {
        /// The new node's `[node] id`.
        id: u64,
        /// The new node's `[cluster] raft` address.
        address: SocketAddr,
    },
    /// Remove a node from the cluster.
    Remove {
        /// The node's `[node] id`.
        id: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Store a certificate chain and its key (PEM) under NAME, replacing
    /// any of that name; checked first (readable, key matches, not expired).
    Add {
        name: String,
        /// The certificate chain, leaf first (PEM).
        #[arg(long)]
        cert_file: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1; PEM).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Every certificate: the names it is valid for, its expiry and fingerprint.
    List {
        /// Answer from the node's own copy without confirming it is current.
        #[arg(long)]
        stale: bool,
    },
    Remove {
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum StickyCommand {
    /// Every member's tables (entries and hash per pool), hits, misses,
    /// re-sticks, proposals and replication lag.
    Stats,
    /// The session a key names: a cookie or header value, or a client IP
    /// for `source_ip` pools.
    Get {
        key: String,
        /// Only this pool [default: every sticky pool].
        #[arg(long)]
        pool: Option<String>,
    },
    /// Forget every session of a pool (committed through Raft).
    Flush { pool: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum GslbCommand {
    /// Each name's policy, sites with health and load, and the answer
    /// (per region for `geo`).
    Status {
        /// Answer from the node's own copy without confirming it is current.
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum LeaderCommand {
    /// Move leadership (and the VIPs) away from the current leader.
    Transfer {
        /// The node to hand over to [default: the most caught-up voter].
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Hand over leadership and VIPs if it has them, stop accepting, finish
    /// in-flight requests, and exit (what SIGTERM does).
    Drain {
        /// The node's `[node] id` [default: the node --node points at].
        id: Option<u64>,
    },
}

impl CtlArgs {
    /// `--timeout`, or the default for this subcommand.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(match self.command {
            CtlCommand::Member(MemberCommand::Add { .. }) => DEFAULT_MEMBER_ADD_TIMEOUT,
            _ => DEFAULT_TIMEOUT,
        })
    }
}

impl BackendCommand {
    /// The command this subcommand writes to the cluster (`list` writes none).
    pub fn to_command(&self) -> Option<Command> {
        let set_state = |pool: &String, address: &SocketAddr, state| Command::SetAdminState {
            pool: pool.clone(),
            address: *address,
            state,
        };
        Some(match self {
            BackendCommand::List { .. } => return None,
            BackendCommand::Add {
                pool,
                address,
                weight,
                state,
            } => {
                let mut backend = BackendSpec::new(*address);
                backend.weight = *weight;
                backend.state = *state;
                Command::AddBackend {
                    pool: pool.clone(),
                    backend,
                }
            }
            BackendCommand::Remove { pool, address } => Command::RemoveBackend {
                pool: pool.clone(),
                address: *address,
            },
            BackendCommand::Weight {
                pool,
                address,
                weight,
            } => Command::SetWeight {
                pool: pool.clone(),
                address: *address,
                weight: *weight,
            },
            BackendCommand::Drain { pool, address } => set_state(pool, address, AdminState::Drain),
            BackendCommand::Enable { pool, address } => set_state(pool, address, AdminState::Enabled),
            BackendCommand::Maintenance { pool, address } => {
                set_state(pool, address, AdminState::Maintenance)
            }
        })
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match raftlb_config::duration::parse(text)? {
        d if d.is_zero() => Err("the timeout must be longer than 0ms".to_string()),
        d => Ok(d),
    }
}

/// `KEY=VALUE`, VALUE a whole number.
fn parse_setting(text: &str) -> Result<(String, u64), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got \"{text}\""))?;
    let value = value
        .parse::<u64>()
        .map_err(|_| format!("{key}: expected a whole number, got \"{value}\""))?;
    Ok((key.to_string(), value))
}

fn parse_weight(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|w| (1..=BackendSpec::MAX_WEIGHT).contains(w))
        .ok_or_else(|| format!("expected a whole number from 1 to {}", BackendSpec::MAX_WEIGHT))
}

fn parse_admin_state(text: &str) -> Result<AdminState, String> {
    AdminState::ALL
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, state)| *state)
        .ok_or_else(|| "expected enabled, drain or maintenance".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    #[test]
    fn no_two_options_or_arguments_share_a_name() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        // A subcommand's argument named like a global option (`sticky get
        // KEY` and `--key`) once swallowed it.
        let get = parse(&["sticky", "get", "u-1", "--key", "/k.pem"]).expect("valid");
        assert!(
            matches!(get.command, CtlCommand::Sticky(StickyCommand::Get { ref key, .. }) if key == "u-1")
        );
        assert_eq!(get.tls_key.as_deref(), Some(std::path::Path::new("/k.pem")));
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied())).map(|cli| cli.ctl)
    }

    fn backend_command(args: &[&str]) -> Command {
        match parse(args).expect("valid arguments").command {
            CtlCommand::Backend(backend) => backend.to_command().expect("a write"),
            other => panic!("not a backend command: {other:?}"),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn backend_add_defaults_to_an_enabled_backend_of_weight_one() {
        let command = backend_command(&["backend", "add", "web", "10.0.0.5:8080"]);
        assert_eq!(
            command,
            Command::AddBackend {
                pool: "web".to_string(),
                backend: BackendSpec::new(addr("10.0.0.5:8080")),
            }
        );
    }

    #[test]
    fn backend_add_takes_weight_and_state() {
        let command = backend_command(&[
            "backend",
            "add",
            "web",
            "10.0.0.5:8080",
            "--weight",
            "7",
            "--state",
            "drain",
        ]);
        let Command::AddBackend { pool, backend } = command else {
            panic!("not an AddBackend: {command:?}");
        };
        assert_eq!(pool, "web");
        assert_eq!(backend.address, addr("10.0.0.5:8080"));
        assert_eq!(backend.weight, 7);
        assert_eq!(backend.state, AdminState::Drain);
    }

    #[test]
    fn each_backend_subcommand_maps_to_its_command() {
        let a = addr("10.0.0.5:8080");
        let pool = "web".to_string();
        let cases = [
            (
                vec!["backend", "remove", "web", "10.0.0.5:8080"],
                Command::RemoveBackend {
                    pool: pool.clone(),
                    address: a,
                },
            ),
            (
                vec!["backend", "weight", "web", "10.0.0.5:8080", "250"],
                Command::SetWeight {
                    pool: pool.clone(),
                    address: a,
                    weight: 250,
                },
            ),
            (
                vec!["backend", "drain", "web", "10.0.0.5:8080"],
                Command::SetAdminState {
                    pool: pool.clone(),
                    address: a,
                    state: AdminState::Drain,
                },
            ),
            (
                vec!["backend", "enable", "web", "10.0.0.5:8080"],
                Command::SetAdminState {
                    pool: pool.clone(),
                    address: a,
                    state: AdminState::Enabled,
                },
            ),
            (
                vec!["backend", "maintenance", "web", "10.0.0.5:8080"],
                Command::SetAdminState {
                    pool: pool.clone(),
                    address: a,
                    state: AdminState::Maintenance,
                },
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(backend_command(&args), expected, "{args:?}");
        }
    }

    #[test]
    fn out_of_range_weights_and_unknown_states_are_usage_errors() {
        for args in [
            vec!["backend", "weight", "web", "10.0.0.5:8080", "0"],
            vec!["backend", "weight", "web", "10.0.0.5:8080", "1001"],
            vec!["backend", "add", "web", "10.0.0.5:8080", "--weight", "-1"],
            vec!["backend", "add", "web", "10.0.0.5:8080", "--state", "down"],
            vec!["backend", "add", "web", "not-an-address"],
        ] {
            let error = parse(&args).expect_err("should be refused");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let before = parse(&["--node", "10.1.1.1:7000", "--json", "pools", "web"]).expect("valid");
        let after = parse(&["pools", "web", "--node", "10.1.1.1:7000", "--json"]).expect("valid");
        for args in [before, after] {
            assert_eq!(args.node.as_deref(), Some("10.1.1.1:7000"));
            assert!(args.json);
            assert!(
                matches!(args.command, CtlCommand::Pools { name: Some(ref n), stale: false } if n == "web")
            );
        }
    }

    #[test]
    fn timeout_parses_durations_and_defaults_by_subcommand() {
        let args = parse(&["--timeout", "250ms", "status"]).expect("valid");
        assert_eq!(args.timeout(), Duration::from_millis(250));
        assert_eq!(parse(&["status"]).expect("valid").timeout(), DEFAULT_TIMEOUT);
        let add = parse(&["member", "add", "4", "10.0.0.4:7000"]).expect("valid");
        assert_eq!(add.timeout(), DEFAULT_MEMBER_ADD_TIMEOUT);
        assert!(parse(&["--timeout", "10", "status"]).is_err());
        assert!(parse(&["--timeout", "0s", "status"]).is_err());
    }
}
