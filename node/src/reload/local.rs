//! What a reload cannot change in a running process: the node's identity
//! (refused: the file names another node) and the node-local settings the
//! process took at start (they wait for `raftlb run --upgrade`). Compared
//! key by key, so each one is named.

use raftlb_config::Config;

/// How a reloaded file's node-local part differs from the running one's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LocalChanges {
    /// Identity keys that differ: the file is not this process's.
    pub identity: Vec<String>,
    /// Settings that differ and take effect only in a new process.
    pub pending: Vec<String>,
}

/// Compares the file's node-local settings with those `running` started with.
pub fn compare(running: &Config, file: &Config) -> LocalChanges {
    let mut changes = LocalChanges::default();
    let (r, f) = (&running.node, &file.node);
    if r.id != f.id {
        changes.identity.push(format!(
            "[node] id is {} in the file, but this process is node {}",
            f.id, r.id
        ));
    }
    if r.data_dir != f.data_dir {
        changes.identity.push(format!(
            "[node] data_dir is \"{}\" in the file, but this process uses \"{}\"",
            f.data_dir, r.data_dir
        ));
    }
    let (rm, fm) = (&running.membership, &file.membership);
    if rm.cluster_id != fm.cluster_id {
        changes.identity.push(format!(
            "[cluster] id is \"{}\" in the file, but this process is of cluster \"{}\"",
            fm.cluster_id, rm.cluster_id
        ));
    }
    let differing = [
        ("[node] role", r.role != f.role),
        ("[node] drain_timeout", r.drain_timeout != f.drain_timeout),
        ("[node] bind_ip", r.bind_ip != f.bind_ip),
        ("[node] metrics", r.metrics != f.metrics),
        ("[cluster] raft", rm.raft != fm.raft),
        ("[cluster.tls] (or insecure_cleartext)", rm.links != fm.links),
        (
            "[cluster] heartbeat_interval",
            rm.timing.heartbeat_interval != fm.timing.heartbeat_interval,
        ),
        (
            "[cluster] election_timeout",
            rm.timing.election_timeout != fm.timing.election_timeout,
        ),
        (
            "[cluster] vip_on_quorum_loss",
            rm.vip_on_quorum_loss != fm.vip_on_quorum_loss,
        ),
        (
            "[cluster] max_message_bytes",
            rm.max_message_bytes != fm.max_message_bytes,
        ),
        ("[[vip]]", running.vips != file.vips),
        (
            "[[certificate]]",
            running.certificate_files != file.certificate_files,
        ),
    ];
    changes.pending = differing
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(key, _)| {
            format!("{key} differs from what this process runs with: it takes effect with `raftlb run --upgrade` (or a restart)")
        })
        .collect();
    if rm.peers != fm.peers {
        changes.pending.push(
            "[cluster] peers differs, and is read only when the cluster first forms: change the members with \
             `raftlb ctl member add|remove`"
                .to_string(),
        );
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        raftlb_config::parse("lb.toml", text).expect("valid config")
    }

    const BASE: &str = "[node]\nid = 1\ndata_dir = \"d1\"\n\n\
        [cluster]\nid = \"c\"\nraft = \"127.0.0.1:7000\"\ninsecure_cleartext = true\n";

    #[test]
    fn reload_the_same_node_local_settings_change_nothing() {
        let changes = compare(&config(BASE), &config(BASE));
        assert_eq!(changes, LocalChanges::default());
    }

    #[test]
    fn reload_names_identity_and_pending_keys() {
        let edited = BASE
            .replace("id = 1", "id = 2\nmetrics = \"127.0.0.1:9100\"")
            .replace(
                "id = \"c\"",
                "id = \"other\"\nheartbeat_interval = \"100ms\"\nelection_timeout = \"400ms\"",
            )
            .replace(
                "insecure_cleartext = true",
                "insecure_cleartext = true\napply_file_on_reload = true",
            );
        let changes = compare(&config(BASE), &config(&edited));
        assert_eq!(changes.identity.len(), 2, "{changes:?}");
        assert!(changes.identity[0].starts_with("[node] id is 2 in the file"));
        assert!(changes.identity[1].starts_with("[cluster] id is \"other\""));
        let keys: Vec<&str> = changes
            .pending
            .iter()
            .map(|p| p.split(" differs").next().unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            [
                "[node] metrics",
                "[cluster] heartbeat_interval",
                "[cluster] election_timeout"
            ]
        );
    }
}
