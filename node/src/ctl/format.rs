//! Human output of `raftlb ctl`: aligned tables and one-line summaries.
//! Pure functions from data to text, so they are tested as such; `--json`
//! output bypasses this file and serializes the same data.

use super::status::{ClusterStatus, MemberView};
use raftlb_config::duration;
use raftlb_config::{Command, ListenerSpec, PoolSpec, Protocol};

/// Left-aligned columns two spaces apart, header first, no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// `raftlb ctl status`: a header line, then one row per member.
pub fn status(status: &ClusterStatus) -> String {
    let mut out = match &status.leader {
        Some(leader) => format!(
            "cluster {}: leader {} ({}), term {}, version {}\n",
            status.cluster_id, leader.id, leader.address, status.term, status.cluster_version
        ),
        None => format!(
            "cluster {}: no leader known, term {}, version {}\n",
            status.cluster_id, status.term, status.cluster_version
        ),
    };
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            let mut row = vec![m.id.to_string(), m.address.clone(), m.role.clone()];
            match &m.view {
                MemberView::Answered {
                    state,
                    term,
                    last_log_index,
                    applied_index,
                    formats,
                    ..
                } => row.extend([
                    state.clone(),
                    term.to_string(),
                    last_log_index.to_string(),
                    applied_index.to_string(),
                    formats.clone(),
                ]),
                MemberView::Unreachable { unreachable } => {
                    row.push(format!("unreachable: {unreachable}"));
                    row.extend(["-", "-", "-", "-"].map(String::from));
                }
            }
            row
        })
        .collect();
    for member in &status.members {
        if let MemberView::Answered { vips, .. } = &member.view
            && !vips.is_empty()
        {
            out.push_str(&format!("node {} holds VIP {}\n", member.id, vips.join(", ")));
        }
        if let MemberView::Answered { no_quorum_ms, .. } = &member.view
            && *no_quorum_ms > 0
        {
            let since = clock_time(std::time::SystemTime::now(), *no_quorum_ms);
            out.push_str(&format!(
                "node {}: no quorum since {since} UTC ({:.1} s); it serves its last committed state and holds no VIP\n",
                member.id,
                *no_quorum_ms as f64 / 1000.0
            ));
        }
    }
    out.push_str(&table(
        &[
            "ID", "ADDRESS", "ROLE", "STATE", "TERM", "LAST LOG", "APPLIED", "FORMATS",
        ],
        &rows,
    ));
    out
}

/// `raftlb ctl listeners`.
pub fn listeners(listeners: &[ListenerSpec]) -> String {
    if listeners.is_empty() {
        return "no listeners\n".to_string();
    }
    let rows: Vec<Vec<String>> = listeners
        .iter()
        .map(|l| {
            // An HTTP listener's idle limit is its keep-alive timeout.
            let idle = match l.protocol {
                Protocol::Http | Protocol::Https => l.http.keepalive_timeout,
                Protocol::Tcp | Protocol::Udp => l.idle_timeout,
            };
            vec![
                l.name.clone(),
                l.protocol.name().to_string(),
                l.bind.to_string(),
                match (&l.pool, l.routes.len()) {
                    (Some(pool), 0) => pool.clone(),
                    (Some(pool), n) => format!("{pool} (+{n} {})", plural(n, "route")),
                    (None, n) => format!("{n} {} (else 404)", plural(n, "route")),
                },
                l.max_connections.to_string(),
                duration::format(idle),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "PROTOCOL",
            "BIND",
            "POOL",
            "MAX CONNECTIONS",
            "IDLE TIMEOUT",
        ],
        &rows,
    )
}

/// `raftlb ctl pools`: each pool's settings, then its backends.
pub fn pools(pools: &[&PoolSpec]) -> String {
    if pools.is_empty() {
        return "no pools\n".to_string();
    }
    let mut out = String::new();
    for (i, pool) in pools.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "pool {}: {}, connect timeout {}, response timeout {}, {} connect {}\n",
            pool.name,
            match pool.algorithm {
                raftlb_config::Algorithm::Maglev => format!("maglev by {}", pool.hash_key),
                other => other.name().to_string(),
            },
            duration::format(pool.connect_timeout),
            duration::format(pool.response_timeout),
            pool.max_connect_attempts,
            plural(pool.max_connect_attempts as usize, "attempt"),
        ));
        if let Some(sticky) = &pool.sticky {
            let name = match sticky.kind {
                raftlb_config::StickyKind::SourceIp => String::new(),
                _ => format!(" {}", sticky.name),
            };
            out.push_str(&format!(
                "  sticky: {}{name}, ttl {}, {}\n",
                sticky.kind.name(),
                duration::format(sticky.ttl),
                match sticky.contract {
                    raftlb_config::StickyContract::Async => "async",
                    raftlb_config::StickyContract::Sync => "sync",
                }
            ));
        }
        if let Some(discovery) = &pool.discovery {
            out.push_str(&super::discovery::line(
                discovery,
                &pool.discovery_status,
                std::time::SystemTime::now(),
            ));
        }
        let limited =
            pool.limits.max_connections != 0 || pool.backends.iter().any(|b| b.max_connections.is_some());
        if limited {
            out.push_str(&format!(
                "  queue: {} at most, {} each\n",
                pool.limits.max_queue,
                duration::format(pool.limits.queue_timeout)
            ));
        }
        let rows: Vec<Vec<String>> = pool
            .backends
            .iter()
            .map(|b| {
                let mut row = vec![
                    b.address.to_string(),
                    b.weight.to_string(),
                    b.state.name().to_string(),
                ];
                if limited {
                    row.push(match b.max_connections.unwrap_or(pool.limits.max_connections) {
                        0 => "-".to_string(),
                        n => n.to_string(),
                    });
                }
                if pool.discovery.is_some() {
                    row.push(if b.discovered { "dns" } else { "static" }.to_string());
                }
                row
            })
            .collect();
        let mut headers: Vec<&str> = vec!["ADDRESS", "WEIGHT", "STATE"];
        if limited {
            headers.push("MAX CONNECTIONS");
        }
        if pool.discovery.is_some() {
            headers.push("FROM");
        }
        let headers = headers.as_slice();
        for line in table(headers, &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// One backend as `raftlb ctl backend list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct BackendRow {
    pub pool: String,
    pub address: std::net::SocketAddr,
    pub weight: u32,
    pub state: &'static str,
    /// Each node's last active-check verdict (`true`: up), by node id;
    /// empty when the pool has no checks or none has been committed.
    pub health: std::collections::BTreeMap<u64, bool>,
}

/// The backends of `pool` (or of every pool), in spec order.
pub fn backend_rows(state: &raftlb_config::ClusterState, pool: Option<&str>) -> Vec<BackendRow> {
    let pools = state
        .spec()
        .pools
        .iter()
        .filter(|p| pool.is_none_or(|name| p.name == name));
    pools
        .flat_map(|p| {
            p.backends.iter().map(|b| BackendRow {
                pool: p.name.clone(),
                address: b.address,
                weight: b.weight,
                state: b.state.name(),
                health: state
                    .health()
                    .verdicts(&p.name, b.address)
                    .cloned()
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// `raftlb ctl backend list`: HEALTH lists `node:up|down` for every node
/// that has reported, `-` when none has (no checks, or none yet).
pub fn backends(rows: &[BackendRow]) -> String {
    if rows.is_empty() {
        return "no backends\n".to_string();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let health: Vec<String> = r
                .health
                .iter()
                .map(|(node, up)| format!("{node}:{}", if *up { "up" } else { "down" }))
                .collect();
            vec![
                r.pool.clone(),
                r.address.to_string(),
                r.weight.to_string(),
                r.state.to_string(),
                if health.is_empty() {
                    "-".to_string()
                } else {
                    health.join(" ")
                },
            ]
        })
        .collect();
    table(
        &["POOL", "ADDRESS", "WEIGHT", "STATE", "HEALTH (NODE:VERDICT)"],
        &rows,
    )
}

/// One line of `raftlb ctl diff`: `+` adds, `-` removes, `~` changes.
pub fn diff_line(command: &Command) -> String {
    let sign = match command {
        Command::Bootstrap(_)
        | Command::AddListener(_)
        | Command::AddPool(_)
        | Command::AddBackend { .. } => '+',
        Command::RemoveListener { .. }
        | Command::RemovePool { .. }
        | Command::RemoveBackend { .. }
        | Command::SetGslb(None) => '-',
        Command::UpdateListener(_)
        | Command::SetClientLimits { .. }
        | Command::ChangeAcl { .. }
        | Command::SetClusterVersion(_)
        | Command::UpdatePool(_)
        | Command::SetWeight { .. }
        | Command::SetAdminState { .. }
        | Command::Batch(_)
        | Command::Independent(_)
        | Command::AssignVip { .. }
        | Command::Sticky(_)
        | Command::SetStickySecret(_)
        | Command::PutCertificate { .. }
        | Command::RemoveCertificate { .. }
        | Command::ReportHealth { .. }
        | Command::SetDiscovered(_)
        | Command::SetGslb(Some(_))
        | Command::SetSiteHealth { .. } => '~',
    };
    format!("{sign} {command}")
}

/// The UTC time of day `ago_ms` before `now`, as HH:MM:SS.
pub(super) fn clock_time(now: std::time::SystemTime, ago_ms: u64) -> String {
    let then = now
        .checked_sub(std::time::Duration::from_millis(ago_ms))
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let day = then % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// `word` or `words`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::status::{LeaderInfo, MemberStatus};
    use raftlb_config::{AdminState, Algorithm, BackendSpec, HttpLimits};
    use std::time::Duration;

    fn answered(state: &str, term: u64, last: u64, applied: u64) -> MemberView {
        MemberView::Answered {
            state: state.to_string(),
            term,
            last_log_index: last,
            applied_index: applied,
            no_quorum_ms: 0,
            vips: Vec::new(),
            formats: "1–2".to_string(),
            pid: 4242,
        }
    }

    #[test]
    fn a_member_without_quorum_gets_a_line_saying_so() {
        let cluster = ClusterStatus {
            cluster_id: "prod".to_string(),
            leader: None,
            term: 3,
            cluster_version: 2,
            members: vec![MemberStatus {
                id: 2,
                address: "10.0.0.2:7000".to_string(),
                role: "voter".to_string(),
                view: MemberView::Answered {
                    state: "candidate".to_string(),
                    term: 9,
                    last_log_index: 10,
                    applied_index: 10,
                    no_quorum_ms: 3250,
                    vips: Vec::new(),
                    formats: "1–2".to_string(),
                    pid: 4242,
                },
            }],
        };
        let text = status(&cluster);
        let line = text.lines().nth(1).expect("a second line");
        assert!(line.starts_with("node 2: no quorum since "), "{line}");
        assert!(
            line.ends_with(" UTC (3.2 s); it serves its last committed state and holds no VIP"),
            "{line}"
        );
        let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400 + 13 * 3600 + 5 * 60 + 9);
        assert_eq!(clock_time(epoch, 3_000), "13:05:06");
    }

    #[test]
    fn status_has_a_leader_line_and_aligned_rows() {
        let cluster = ClusterStatus {
            cluster_id: "prod".to_string(),
            leader: Some(LeaderInfo {
                id: 1,
                address: "10.0.0.1:7000".to_string(),
            }),
            term: 3,
            cluster_version: 2,
            members: vec![
                MemberStatus {
                    id: 1,
                    address: "10.0.0.1:7000".to_string(),
                    role: "voter".to_string(),
                    view: answered("leader", 3, 120, 120),
                },
                MemberStatus {
                    id: 2,
                    address: "10.0.0.2:7000".to_string(),
                    role: "learner".to_string(),
                    view: MemberView::Unreachable {
                        unreachable: "Connection refused (os error 111)".to_string(),
                    },
                },
            ],
        };
        let text = status(&cluster);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "cluster prod: leader 1 (10.0.0.1:7000), term 3, version 2"
        );
        assert_eq!(
            lines[1],
            "ID  ADDRESS        ROLE     STATE                                           TERM  LAST LOG  APPLIED  FORMATS"
        );
        assert_eq!(
            lines[2],
            "1   10.0.0.1:7000  voter    leader                                          3     120       120      1–2"
        );
        assert_eq!(
            lines[3],
            "2   10.0.0.2:7000  learner  unreachable: Connection refused (os error 111)  -     -         -        -"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn status_without_a_leader_says_so() {
        let cluster = ClusterStatus {
            cluster_id: "prod".to_string(),
            leader: None,
            term: 7,
            cluster_version: 1,
            members: Vec::new(),
        };
        assert!(status(&cluster).starts_with("cluster prod: no leader known, term 7, version 1\n"));
    }

    #[test]
    fn listeners_table_shows_each_listener_and_its_idle_limit() {
        let listener = |name: &str, protocol, bind: &str, idle| ListenerSpec {
            name: name.to_string(),
            protocol,
            bind: bind.parse().unwrap(),
            pool: Some("web".to_string()),
            routes: Vec::new(),
            max_connections: 10_000,
            idle_timeout: idle,
            http: HttpLimits::default(),
            limits: Default::default(),
            acl: Vec::new(),
            proxy_trusted: Vec::new(),
            quic: Default::default(),
        };
        let text = listeners(&[
            listener("public", Protocol::Http, "0.0.0.0:80", Duration::from_secs(99)),
            listener("dns", Protocol::Udp, "0.0.0.0:53", Duration::from_secs(30)),
        ]);
        assert_eq!(
            text,
            "NAME    PROTOCOL  BIND        POOL  MAX CONNECTIONS  IDLE TIMEOUT\n\
             public  http      0.0.0.0:80  web   10000            75s\n\
             dns     udp       0.0.0.0:53  web   10000            30s\n"
        );
        assert_eq!(listeners(&[]), "no listeners\n");
    }

    #[test]
    fn pools_show_settings_then_indented_backends() {
        let mut drained = BackendSpec::new("10.0.0.6:8080".parse().unwrap());
        drained.weight = 25;
        drained.state = AdminState::Drain;
        let pool = PoolSpec {
            name: "web".to_string(),
            algorithm: Algorithm::WeightedRoundRobin,
            backends: vec![BackendSpec::new("10.0.0.5:8080".parse().unwrap()), drained],
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(60),
            ..crate::balance::test_pool(&[])
        };
        let other = PoolSpec {
            name: "api".to_string(),
            max_connect_attempts: 3,
            ..pool.clone()
        };
        assert_eq!(
            pools(&[&pool, &other]),
            "pool web: weighted_round_robin, connect timeout 3s, response timeout 1m, 1 connect attempt\n  \
             ADDRESS        WEIGHT  STATE\n  \
             10.0.0.5:8080  1       enabled\n  \
             10.0.0.6:8080  25      drain\n\
             \n\
             pool api: weighted_round_robin, connect timeout 3s, response timeout 1m, 3 connect attempts\n  \
             ADDRESS        WEIGHT  STATE\n  \
             10.0.0.5:8080  1       enabled\n  \
             10.0.0.6:8080  25      drain\n"
        );
        assert_eq!(pools(&[]), "no pools\n");
        let mut limited = pool.clone();
        limited.limits.max_connections = 100;
        limited.backends[1].max_connections = Some(20);
        assert_eq!(
            pools(&[&limited]),
            "pool web: weighted_round_robin, connect timeout 3s, response timeout 1m, 1 connect attempt\n  \
             queue: 1024 at most, 5s each\n  \
             ADDRESS        WEIGHT  STATE    MAX CONNECTIONS\n  \
             10.0.0.5:8080  1       enabled  100\n  \
             10.0.0.6:8080  25      drain    20\n"
        );
    }

    #[test]
    fn diff_lines_are_signed_by_kind() {
        let address = "10.0.0.5:8080".parse().unwrap();
        let pool = "web".to_string();
        assert_eq!(
            diff_line(&Command::AddBackend {
                pool: pool.clone(),
                backend: BackendSpec::new(address),
            }),
            "+ add backend 10.0.0.5:8080 (weight 1) to pool web"
        );
        assert_eq!(
            diff_line(&Command::RemoveBackend {
                pool: pool.clone(),
                address
            }),
            "- remove backend 10.0.0.5:8080 from pool web"
        );
        assert_eq!(
            diff_line(&Command::SetWeight {
                pool,
                address,
                weight: 4
            }),
            "~ set weight of 10.0.0.5:8080 in pool web to 4"
        );
    }
}
