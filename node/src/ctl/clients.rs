//! `ctl listener limits` and `ctl acl …`: what clients may do on a
//! listener. Each change is one write (one Raft entry); every node applies
//! it to its next connection.

use super::args::{AclCommand, ListenerCommand};
use super::{CtlArgs, Settings, connect, format, read_state, render, write};
use raftlb_config::{AclAction, AclChange, AclRule, Cidr, ClientLimits, ClusterState, Command, ListenerSpec};
use serde::Serialize;
use std::path::Path;

/// Runs `listener limits`.
pub(super) async fn listener(
    command: &ListenerCommand,
    settings: &Settings,
    args: &CtlArgs,
) -> Result<String, String> {
    let ListenerCommand::Limits {
        name,
        settings: pairs,
    } = command;
    let mut client = connect(settings, args).await?;
    let state = read_state(&mut client, false).await?;
    let current = find(&state, name)?.limits;
    if pairs.is_empty() {
        return render(args.json, &current, || limits_table(&current));
    }
    let limits = changed(current, pairs)?;
    let command = Command::SetClientLimits {
        listener: name.clone(),
        limits,
    };
    let log_index = write(&mut client, &command).await?;
    render(args.json, &Written { log_index, limits }, || {
        format!(
            "limits of listener {name} set at log index {log_index}\n{}",
            limits_table(&limits)
        )
    })
}

/// Runs `acl list|add|remove`.
pub(super) async fn acl(command: &AclCommand, settings: &Settings, args: &CtlArgs) -> Result<String, String> {
    let (listener, change) = match command {
        AclCommand::List { listener, stale } => {
            let state = read_state(&mut connect(settings, args).await?, *stale).await?;
            let rules = &find(&state, listener)?.acl;
            return render(args.json, rules, || rules_table(rules));
        }
        AclCommand::Add {
            listener,
            deny,
            networks,
            file,
            ..
        } => {
            let action = if *deny { AclAction::Deny } else { AclAction::Allow };
            let set = with_file(networks, file.as_deref())?
                .into_iter()
                .map(|network| AclRule { network, action })
                .collect();
            (
                listener,
                AclChange {
                    set,
                    remove: Vec::new(),
                },
            )
        }
        AclCommand::Remove {
            listener,
            networks,
            file,
        } => {
            let remove = with_file(networks, file.as_deref())?;
            (
                listener,
                AclChange {
                    set: Vec::new(),
                    remove,
                },
            )
        }
    };
    if change.set.is_empty() && change.remove.is_empty() {
        return Err("no network given (NETWORK arguments or --file)".to_string());
    }
    let (set, removed) = (change.set.len(), change.remove.len());
    let command = Command::ChangeAcl {
        listener: listener.clone(),
        change,
    };
    let log_index = write(&mut connect(settings, args).await?, &command).await?;
    render(
        args.json,
        &AclWritten {
            log_index,
            set,
            removed,
        },
        || {
            let what = if set > 0 {
                format!("{set} {} set", format::plural(set, "rule"))
            } else {
                format!("{removed} {} removed", format::plural(removed, "rule"))
            };
            format!("ACL of listener {listener}: {what} at log index {log_index}\n")
        },
    )
}

fn find<'a>(state: &'a ClusterState, name: &str) -> Result<&'a ListenerSpec, String> {
    let listeners = &state.spec().listeners;
    listeners.iter().find(|l| l.name == name).ok_or_else(|| {
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        format!(
            "no listener named \"{name}\"; the cluster has: {}",
            names.join(", ")
        )
    })
}

/// `limits` with `pairs` set; a rate set without its burst gets two
/// seconds of it as its burst, as in the file.
fn changed(mut limits: ClientLimits, pairs: &[(String, u64)]) -> Result<ClientLimits, String> {
    for (key, value) in pairs {
        limits.set(key, *value)?;
    }
    let given = |key: &str| pairs.iter().any(|(k, _)| k == key);
    for (rate, burst) in [
        ("connection_rate", "connection_burst"),
        ("request_rate", "request_burst"),
    ] {
        if given(rate) && !given(burst) {
            let doubled = u64::from(limits.get(rate).unwrap_or(0)).saturating_mul(2);
            let (_, max) = ClientLimits::bounds(burst).unwrap_or((0, 0));
            limits.set(burst, doubled.min(max))?;
        }
    }
    limits.check()?;
    Ok(limits)
}

/// The networks given, and those of `file` (one per line; blank lines and
/// `#` comments skipped), each error naming its line.
fn with_file(networks: &[Cidr], file: Option<&Path>) -> Result<Vec<Cidr>, String> {
    let mut all = networks.to_vec();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let network = line
                .parse::<Cidr>()
                .map_err(|why| format!("{}:{}: {why}", path.display(), i + 1))?;
            all.push(network);
        }
    }
    Ok(all)
}

fn limits_table(limits: &ClientLimits) -> String {
    let rows: Vec<Vec<String>> = ClientLimits::KEYS
        .iter()
        .map(|key| {
            let value = limits.get(key).unwrap_or(0);
            let shown = match (value, key.starts_with("source")) {
                (0, false) => "off".to_string(),
                _ => value.to_string(),
            };
            vec![key.to_string(), shown]
        })
        .collect();
    format::table(&["LIMIT", "VALUE"], &rows)
}

fn rules_table(rules: &[AclRule]) -> String {
    if rules.is_empty() {
        return "no rules: every source is allowed\n".to_string();
    }
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|r| vec![r.network.to_string(), r.action.name().to_string()])
        .collect();
    format::table(&["NETWORK", "ACTION"], &rows)
}

/// What `listener limits` prints with `--json` after a change.
#[derive(Debug, Serialize)]
struct Written {
    log_index: u64,
    limits: ClientLimits,
}

/// What `acl add|remove` prints with `--json`.
#[derive(Debug, Serialize)]
struct AclWritten {
    log_index: u64,
    set: usize,
    removed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_without_its_burst_gets_two_seconds_of_it() {
        let limits = changed(ClientLimits::default(), &[("request_rate".into(), 50_000)]).unwrap();
        assert_eq!((limits.request_rate, limits.request_burst), (50_000, 100_000));
        let limits = changed(ClientLimits::default(), &[("request_rate".into(), 10)]).unwrap();
        assert_eq!(limits.request_burst, 20);
        let refused = changed(
            ClientLimits::default(),
            &[("request_rate".into(), 100), ("request_burst".into(), 10)],
        );
        assert!(refused.unwrap_err().contains("request_burst 10 is below"));
    }

    #[test]
    fn a_bad_line_of_the_file_is_named() {
        let dir = std::env::temp_dir().join(format!("raftlb-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("deny.txt");
        std::fs::write(
            &path,
            "# bad networks\n198.51.100.0/24\n\n203.0.113.7 # one host\n10.0.0.1/8\n",
        )
        .unwrap();
        let err = with_file(&[], Some(&path)).unwrap_err();
        assert!(
            err.ends_with("deny.txt:5: 10.0.0.1/8 has bits set after the prefix; the network is 10.0.0.0/8"),
            "{err}"
        );
        std::fs::write(&path, "198.51.100.0/24\n203.0.113.7 # one host\n").unwrap();
        assert_eq!(with_file(&[], Some(&path)).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
