//! The `raftlb` command: `check`, `run`, `reload`, `demo`, `ctl`, `certs`,
//! `probe`, `backend`.
//! Exit codes: 0 success, 1 configuration or runtime error, 2 usage error.

use clap::{Parser, Subcommand};
use raftlb_node::{demo, node};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc's per-thread heaps suit the data plane's thread-per-core workers
/// (each connection's buffers are allocated and freed on one thread). Built
/// without transparent huge pages (feature `no_thp`), and [`main`] turns
/// them off for the process: with them, every thread's first touch of its
/// heap made 2 MiB resident, and an idle node held ~60 MB instead of ~18.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "raftlb",
    version,
    about = "A clustered, highly available L4/L7 load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and exit: 0 when valid, 1 with every problem otherwise.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Serve the configuration until SIGINT or SIGTERM, then drain and exit;
    /// SIGHUP reads the config file again; SIGUSR2 starts the binary on disk
    /// to take over (in-place upgrade).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Data-plane worker threads (default: one per CPU).
        #[arg(long, env = "RAFTLB_WORKER_THREADS")]
        threads: Option<usize>,
        /// Take over from the process serving this config's data dir without
        /// a gap: its listening sockets, its lock, then its Raft log; it then
        /// drains and exits (as SIGUSR2 to it does with the binary on disk).
        #[arg(long)]
        upgrade: bool,
    },
    /// Make the node serving this config's data dir read the file again (as
    /// SIGHUP does) and print what it did: 0 when it took, 1 otherwise.
    Reload {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a 3-node cluster on 127.0.0.1-3 with three built-in backends, and show what to try.
    Demo {
        /// Port of each node's HTTP listener (on 127.0.0.N).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Port of each node's Raft and admin gRPC (on 127.0.0.N).
        #[arg(long, default_value_t = 7000)]
        raft_port: u16,
        /// Port of the first demo backend; the others follow it.
        #[arg(long, default_value_t = 9001)]
        backend_port: u16,
    },
    /// Administer a running cluster through any node's admin API.
    Ctl(raftlb_node::ctl::CtlArgs),
    /// Make the cluster's CA, node and client certificates (mutual TLS).
    Certs {
        #[command(subcommand)]
        command: raftlb_node::certs::CertsCommand,
    },
    /// GET a URL, or the /readyz of the node a config file describes, and
    /// print the answer: 0 on a 2xx status, 1 otherwise (health checks).
    Probe {
        #[arg(long, short, conflicts_with = "url", required_unless_present = "url")]
        config: Option<PathBuf>,
        /// An http:// URL whose host is an IP address.
        #[arg(long)]
        url: Option<String>,
        /// How long to wait for the whole answer, in seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
        /// Ask again, every 200 ms, until a 2xx answer or this many seconds passed.
        #[arg(long, default_value_t = 0)]
        retry_for: u64,
        /// A line to print first once the answer is a 2xx.
        #[arg(long)]
        banner: Option<String>,
    },
    /// Serve a tiny HTTP backend that answers every request with its name (demos).
    Backend {
        #[arg(long, default_value = "0.0.0.0:8000")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    // Before any thread starts (see ALLOCATOR). A kernel without the
    // setting costs memory, nothing else.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Ctl(args) => block_on(raftlb_node::ctl::run(args)),
        Command::Certs { command } => match raftlb_node::certs::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Run {
            config: path,
            threads,
            upgrade,
        } => match node::load_config(&path) {
            Ok(config) => {
                match raftlb_node::capabilities::raise_permitted() {
                    Ok(missing) if missing.is_empty() => {}
                    Ok(missing) => tracing::info!(
                        ?missing,
                        "capabilities not held: VIPs need CAP_NET_ADMIN and CAP_NET_RAW, ports below 1024 CAP_NET_BIND_SERVICE"
                    ),
                    Err(e) => tracing::warn!(error = %e, "capabilities not raised"),
                }
                let workers = threads.filter(|t| *t > 0).unwrap_or_else(node::default_workers);
                block_on(async move {
                    node::run(config, &path, workers, node::stop_signal(), upgrade)
                        .await
                        .map_err(|e| e.to_string())
                })
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::Reload { config } => block_on(async move {
            let answer = raftlb_node::reload::client::run(&config)
                .await
                .map_err(|e| e.to_string())?;
            match answer.ok {
                true => {
                    println!("{}", answer.lines.join("\n"));
                    Ok(())
                }
                false => Err(answer.lines.join("\n")),
            }
        }),
        Command::Probe {
            config,
            url,
            timeout,
            retry_for,
            banner,
        } => block_on(probe(
            config,
            url,
            std::time::Duration::from_secs(timeout),
            std::time::Duration::from_secs(retry_for),
            banner,
        )),
        Command::Backend { listen, name } => block_on(demo::backend(listen, name)),
        Command::Demo {
            http_port,
            raft_port,
            backend_port,
        } => block_on(demo::run(demo::Ports {
            http: http_port,
            raft: raft_port,
            backend: backend_port,
        })),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match node::load_config(path) {
        Ok(config) => {
            if let Err(e) = raftlb_node::control::cluster::links(&config) {
                return fail(&e.to_string());
            }
            let listeners = config.cluster.listeners.len();
            let pools = config.cluster.pools.len();
            let backends = config.cluster.backend_count();
            println!(
                "config ok: {listeners} {}, {pools} {}, {backends} {}",
                plural(listeners, "listener"),
                plural(pools, "pool"),
                plural(backends, "backend")
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

async fn probe(
    config: Option<PathBuf>,
    url: Option<String>,
    timeout: std::time::Duration,
    retry_for: std::time::Duration,
    banner: Option<String>,
) -> Result<(), String> {
    use raftlb_node::probe::{Target, get};
    let target = match (config, url) {
        (_, Some(url)) => Target::parse_url(&url)?,
        (Some(path), None) => {
            let config = node::load_config(&path).map_err(|e| e.to_string())?;
            let metrics = config.node.metrics.ok_or_else(|| {
                format!(
                    "{}: [node] metrics is not set, so the node serves no /readyz to probe",
                    path.display()
                )
            })?;
            Target::readiness(metrics)
        }
        (None, None) => return Err("give --config or --url".to_string()),
    };
    let started = std::time::Instant::now();
    loop {
        let outcome = match get(&target, timeout).await {
            Ok((status, body)) if (200..300).contains(&status) => {
                if let Some(banner) = &banner {
                    println!("{banner}");
                }
                print!("{status} {body}");
                return Ok(());
            }
            Ok((status, body)) => format!("{} answered {status}: {}", target.address, body.trim()),
            Err(e) => e,
        };
        if started.elapsed() >= retry_for {
            return Err(outcome);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// Runs `main` on the control runtime (signals, the demo's backends; the
/// data plane has its own worker threads) and maps its outcome to an exit code.
fn block_on(main: impl Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(1)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
