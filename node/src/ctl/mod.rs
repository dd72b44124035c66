//! `raftlb ctl`: administers a running cluster through any node's admin
//! API (`proto/admin.proto`). Every connect and call is bounded by
//! `--timeout`; any failure comes back as one line for `main` to print
//! before exiting 1.
//!
//! - `args`: the command line, and the `backend …` → [`Command`] mapping.
//! - `client`: one node's admin API with credentials, timeouts and
//!   operator-readable errors.
//! - `status`: asks every member for its own view of the cluster.
//! - `cert`: reading and checking certificates before they are stored.
//! - `clients`: `listener limits` and `acl`, what clients may do.
//! - `gslb`: `gslb status`, each GSLB name's sites and answer.
//! - `sticky`: the sticky-table calls, asked of every member for `stats`.
//! - `format`: the human tables; `--json` serializes the same data instead.

mod args;
mod cert;
mod client;
mod clients;
mod discovery;
mod format;
mod gslb;
mod settings;
mod status;
mod sticky;

pub use args::{
    AclCommand, BackendCommand, CertCommand, CtlArgs, CtlCommand, GslbCommand, LeaderCommand,
    ListenerCommand, MemberCommand, NodeCommand, StickyCommand,
};

use crate::node;
use crate::pki::Expect;
use client::Client;
use raftlb_config::{ClusterState, Command};
use serde::Serialize;
use settings::Settings;
use std::io::Write;
use std::path::Path;

/// Runs one `raftlb ctl` subcommand and prints its output; `Err` is the
/// one line to print on stderr.
pub async fn run(args: CtlArgs) -> Result<(), String> {
    let settings = Settings::from_args(&args, args.timeout())?;
    let output = execute(args, &settings)
        .await
        .map_err(|error| cleartext_hint(&settings, error))?;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
        // `raftlb ctl pools | head` closing the pipe early is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write the output: {e}")),
        _ => Ok(()),
    }
}

/// A cleartext call answered with TLS fails as garbled HTTP/2; say why.
fn cleartext_hint(settings: &Settings, error: String) -> String {
    let garbled = [
        "frame with invalid size",
        "h2 protocol error",
        "connection closed before message completed",
        "broken pipe",
        "connection reset",
    ];
    if settings.tls || !garbled.iter().any(|g| error.contains(g)) {
        return error;
    }
    format!(
        "{}: the node speaks TLS (its cluster has [cluster.tls]): give --ca, --cert and --key \
         (or RAFTLB_CA, RAFTLB_CERT, RAFTLB_KEY, or a ctl config file)",
        settings.node
    )
}

/// Runs one subcommand and returns what it prints.
async fn execute(args: CtlArgs, settings: &Settings) -> Result<String, String> {
    let json = args.json;
    match &args.command {
        CtlCommand::Status => {
            let mut client = connect(settings, &args).await?;
            let cluster = status::gather(&mut client, &settings.dialer, args.timeout()).await?;
            render(json, &cluster, || format::status(&cluster))
        }
        CtlCommand::Listeners { stale } => {
            let state = read_state(&mut connect(settings, &args).await?, *stale).await?;
            let listeners = &state.spec().listeners;
            render(json, listeners, || format::listeners(listeners))
        }
        CtlCommand::Pools { name, stale } => {
            let state = read_state(&mut connect(settings, &args).await?, *stale).await?;
            let pools = &state.spec().pools;
            match name {
                None => render(json, pools, || format::pools(&pools.iter().collect::<Vec<_>>())),
                Some(name) => {
                    let pool = state.spec().pool(name).ok_or_else(|| no_pool(name, &state))?;
                    render(json, pool, || format::pools(&[pool]))
                }
            }
        }
        CtlCommand::Listener(command) => clients::listener(command, settings, &args).await,
        CtlCommand::Acl(command) => clients::acl(command, settings, &args).await,
        CtlCommand::Backend(BackendCommand::List { pool, stale }) => {
            let state = read_state(&mut connect(settings, &args).await?, *stale).await?;
            if let Some(name) = pool {
                state.spec().pool(name).ok_or_else(|| no_pool(name, &state))?;
            }
            let rows = format::backend_rows(&state, pool.as_deref());
            render(json, &rows, || format::backends(&rows))
        }
        CtlCommand::Backend(backend) => {
            let command = backend.to_command().ok_or("nothing to write")?;
            let log_index = write(&mut connect(settings, &args).await?, &command).await?;
            let written = Written {
                log_index,
                command: &command,
            };
            render(json, &written, || {
                format!("applied at log index {log_index}: {command}\n")
            })
        }
        CtlCommand::Member(MemberCommand::Add { id, address }) => {
            let mut client = connect(settings, &args).await?;
            let reply = client
                .add_member(*id, address.to_string())
                .await
                .map_err(|e| e.to_string())?;
            let log_index = reply.log_index;
            render(json, &Membership { log_index }, || {
                format!("node {id} ({address}) added as a voter at log index {log_index}\n")
            })
        }
        CtlCommand::Leader(LeaderCommand::Transfer { to }) => {
            let mut client = connect(settings, &args).await?;
            let reply = client.transfer_leader(*to).await.map_err(|e| e.to_string())?;
            let leader_id = reply.leader_id;
            render(json, &Transferred { leader_id }, || {
                format!("node {leader_id} is the leader now\n")
            })
        }
        CtlCommand::Node(NodeCommand::Drain { id }) => {
            // The drain call goes to the node itself, found through --node.
            let mut client = connect(settings, &args).await?;
            let status = client.status().await.map_err(|e| e.to_string())?;
            // No id: the node --node points at (a Kubernetes preStop hook).
            let id = &id.unwrap_or(status.node_id);
            let member = status
                .members
                .iter()
                .find(|m| m.id == *id)
                .ok_or_else(|| format!("node {id} is not a member of cluster {}", status.cluster_id))?;
            let mut target = Client::connect(
                &member.address,
                &settings.dialer,
                Expect::Node(*id),
                args.timeout(),
            )
            .await
            .map_err(|e| e.to_string())?;
            target.drain().await.map_err(|e| e.to_string())?;
            render(json, &Draining { node_id: *id }, || {
                format!(
                    "node {id} is draining: leadership and VIPs move first, then in-flight requests finish and it exits\n"
                )
            })
        }
        CtlCommand::Member(MemberCommand::Remove { id }) => {
            let mut client = connect(settings, &args).await?;
            let reply = client.remove_member(*id).await.map_err(|e| e.to_string())?;
            let log_index = reply.log_index;
            render(json, &Membership { log_index }, || {
                format!("node {id} removed at log index {log_index}\n")
            })
        }
        CtlCommand::Cert(CertCommand::Add {
            name,
            cert_file,
            key_file,
        }) => {
            let (command, summary) = cert::add(name, cert_file, key_file)?;
            let log_index = write(&mut connect(settings, &args).await?, &command).await?;
            render(json, &summary, || {
                format!(
                    "certificate {name} stored at log index {log_index}: {}\n",
                    summary.describe()
                )
            })
        }
        CtlCommand::Cert(CertCommand::List { stale }) => {
            let state = read_state(&mut connect(settings, &args).await?, *stale).await?;
            let list = cert::list(&state);
            render(json, &list, || cert::format_list(&list))
        }
        CtlCommand::Cert(CertCommand::Remove { name }) => {
            let command = Command::RemoveCertificate { name: name.clone() };
            let log_index = write(&mut connect(settings, &args).await?, &command).await?;
            render(json, &Membership { log_index }, || {
                format!("certificate {name} removed at log index {log_index}\n")
            })
        }
        CtlCommand::Snapshot => {
            let mut client = connect(settings, &args).await?;
            let reply = client.snapshot().await.map_err(|e| e.to_string())?;
            let shown = (reply.index, reply.bytes, reply.build_ms);
            render(json, &shown, || {
                format!(
                    "snapshot at log index {} ({} bytes) built in {} ms; the log up to it is purged\n",
                    reply.index, reply.bytes, reply.build_ms
                )
            })
        }
        CtlCommand::Gslb(GslbCommand::Status { stale }) => {
            let state = read_state(&mut connect(settings, &args).await?, *stale).await?;
            let status = gslb::status(&state);
            render(json, &status, || gslb::format(&status))
        }
        CtlCommand::Sticky(StickyCommand::Stats) => {
            let mut client = connect(settings, &args).await?;
            let members = sticky::gather(&mut client, &settings.dialer, args.timeout()).await?;
            render(json, &members, || sticky::format_stats(&members))
        }
        CtlCommand::Sticky(StickyCommand::Get { key, pool }) => {
            let mut client = connect(settings, &args).await?;
            let reply = client
                .sticky_get(key.clone(), pool.clone().unwrap_or_default())
                .await
                .map_err(|e| e.to_string())?;
            let sessions: Vec<_> = reply
                .sessions
                .iter()
                .map(|s| (s.pool.as_str(), s.backend.as_str(), s.age_ms, s.key.as_str()))
                .collect();
            render(json, &sessions, || sticky::format_get(key, &reply))
        }
        CtlCommand::Sticky(StickyCommand::Flush { pool }) => {
            let command = Command::Sticky(raftlb_config::StickyChange::Flush { pool: pool.clone() });
            let log_index = write(&mut connect(settings, &args).await?, &command).await?;
            render(json, &Membership { log_index }, || {
                format!("flushed the sticky sessions of pool {pool} at log index {log_index}\n")
            })
        }
        CtlCommand::Diff { config } => {
            let (_, changes) = changes(settings, &args, config).await?;
            render(json, &changes, || match changes.as_slice() {
                [] => format!(
                    "no difference: the cluster already matches {}\n",
                    config.display()
                ),
                commands => commands.iter().map(|c| format::diff_line(c) + "\n").collect(),
            })
        }
        CtlCommand::Apply { config } => {
            let (mut client, changes) = changes(settings, &args, config).await?;
            let log_index = match changes.as_slice() {
                [] => None,
                // One write: the whole file's difference is applied atomically or not at all.
                _ => Some(write(&mut client, &Command::Batch(changes.clone())).await?),
            };
            let applied = Applied {
                changes: changes.len(),
                log_index,
                commands: &changes,
            };
            render(json, &applied, || match log_index {
                None => "nothing to apply\n".to_string(),
                Some(index) => {
                    let mut text: String = changes.iter().map(|c| format::diff_line(c) + "\n").collect();
                    text.push_str(&format!(
                        "applied {} {} at log index {index}\n",
                        changes.len(),
                        format::plural(changes.len(), "change")
                    ));
                    text
                }
            })
        }
    }
}

async fn connect(settings: &Settings, args: &CtlArgs) -> Result<Client, String> {
    Client::connect(&settings.node, &settings.dialer, Expect::AnyNode, args.timeout())
        .await
        .map_err(|e| e.to_string())
}

/// The commands that would make the cluster match the file at `path`
/// (read linearizably), and the client that read it. A bad file fails
/// before anything touches the network.
async fn changes(settings: &Settings, args: &CtlArgs, path: &Path) -> Result<(Client, Vec<Command>), String> {
    let file = node::load_config(path).map_err(|e| e.to_string())?;
    let mut client = connect(settings, args).await?;
    let state = read_state(&mut client, false).await?;
    Ok((client, raftlb_config::diff::diff(state.spec(), &file.cluster)))
}

/// What `backend …` prints with `--json`.
#[derive(Debug, Serialize)]
struct Written<'a> {
    log_index: u64,
    command: &'a Command,
}

/// What `member …` prints with `--json`.
#[derive(Debug, Serialize)]
struct Membership {
    log_index: u64,
}

/// What `leader transfer` prints with `--json`.
#[derive(Debug, Serialize)]
struct Transferred {
    leader_id: u64,
}

/// What `node drain` prints with `--json`.
#[derive(Debug, Serialize)]
struct Draining {
    node_id: u64,
}

/// What `apply` prints with `--json`; `log_index` is null when nothing changed.
#[derive(Debug, Serialize)]
struct Applied<'a> {
    changes: usize,
    log_index: Option<u64>,
    commands: &'a [Command],
}

/// Reads and decodes the cluster state (linearizable unless `stale`).
async fn read_state(client: &mut Client, stale: bool) -> Result<ClusterState, String> {
    let reply = client.read(stale).await.map_err(|e| e.to_string())?;
    postcard::from_bytes(&reply.state).map_err(|e| {
        format!(
            "cannot decode the cluster state from {}: {e} (does it run another raftlb version?)",
            client.address()
        )
    })
}

/// Writes `command`; its log index if applied, the node's reason if not.
async fn write(client: &mut Client, command: &Command) -> Result<u64, String> {
    // In the oldest format that carries it: bare (format 1) unless it sets
    // something newer, which a node too old to read it refuses in words.
    let bytes = raftlb_config::Proposal::new(command.format_needed(), command.clone()).encode()?;
    let reply = client.write(bytes).await.map_err(|e| e.to_string())?;
    if !reply.applied {
        return Err(format!("rejected: {}", reply.rejected));
    }
    Ok(reply.log_index)
}

fn no_pool(name: &str, state: &ClusterState) -> String {
    let names: Vec<&str> = state.spec().pools.iter().map(|p| p.name.as_str()).collect();
    match names.as_slice() {
        [] => format!("no pool named \"{name}\": the cluster has no pools"),
        names => format!("no pool named \"{name}\"; the cluster has: {}", names.join(", ")),
    }
}

/// `value` as JSON with `--json`, else the human text.
fn render<T: Serialize + ?Sized>(
    json: bool,
    value: &T,
    human: impl FnOnce() -> String,
) -> Result<String, String> {
    if !json {
        return Ok(human());
    }
    let mut text = serde_json::to_string_pretty(value).map_err(|e| format!("cannot encode JSON: {e}"))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pool_lists_the_ones_there_are() {
        assert_eq!(
            no_pool("api", &ClusterState::default()),
            "no pool named \"api\": the cluster has no pools"
        );
    }
}
