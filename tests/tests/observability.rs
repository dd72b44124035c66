//! The observability kit against real processes: the alert rules pass
//! `promtool check rules` and their unit tests; every dashboard query
//! parses; a node's `/metrics`, after real traffic, passes `promtool check
//! metrics` with sane Raft and process values; every metric name the alerts
//! and the dashboard use is in a real scrape; and, in network namespaces,
//! each node reports every VIP it has configured, 1 on exactly one node,
//! and 0 with a lease miss once its holder loses the quorum. Needs `promtool` (Debian package
//! `prometheus`) and root for the VIP test; otherwise skips, saying so,
//! unless `RAFTLB_REQUIRE_TOOLS=1`.

use raftlb_tests::backends::HttpBackend;
use raftlb_tests::client::{get, http1};
use raftlb_tests::cluster::{Cluster, http_seed};
use raftlb_tests::netns::{Lab, on_host};
use raftlb_tests::process::Raftlb;
use raftlb_tests::{root_or_skip, wait};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The repository's `deploy/` directory.
fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

/// `promtool`, or `None` after saying why the test skips; with
/// `RAFTLB_REQUIRE_TOOLS=1` a missing promtool fails the test instead.
fn promtool(test: &str) -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{test}: promtool is missing and RAFTLB_REQUIRE_TOOLS=1 (apt-get install prometheus)"
    );
    eprintln!("SKIPPED {test}: promtool is not installed (Debian: apt-get install prometheus)");
    None
}

/// Runs promtool with `args` (and `stdin`); its exit code and what it printed.
fn run_promtool(args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write to promtool");
    drop(input);
    let output = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// `promtool check metrics` on `scrape`: a parse error fails; lint
/// findings (exit code 3) are printed as warnings.
fn check_metrics(scrape: &str) {
    let (code, text) = run_promtool(&["check", "metrics"], Some(scrape));
    assert!(
        code == 0 || code == 3,
        "promtool check metrics failed ({code}):\n{text}\n--- scrape ---\n{scrape}"
    );
    match text.trim() {
        "" => println!("promtool check metrics: no findings"),
        findings => println!("promtool check metrics warnings:\n{findings}"),
    }
}

/// `GET /metrics` from `address`, on a blocking socket (so it can run on
/// a thread inside a namespace).
fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read the scrape");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Every sample of `scrape` by its name and labels (`name{labels}`).
fn samples(scrape: &str) -> BTreeMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the one sample named exactly `series` (with its labels).
fn value(scrape: &str, series: &str) -> f64 {
    *samples(scrape)
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
}

/// Metric names in `scrape`: those of its samples and of its `# TYPE`
/// lines (a family with no series yet is still declared).
fn scraped_names(scrape: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = samples(scrape)
        .keys()
        .map(|s| s.split('{').next().unwrap_or(s).to_string())
        .collect();
    names.extend(scrape.lines().filter_map(|l| {
        let rest = l.strip_prefix("# TYPE ")?;
        Some(rest.split_whitespace().next()?.to_string())
    }));
    names
}

/// The `raftlb_…` and `process_…` identifiers in a PromQL expression,
/// with a histogram's or summary's `_bucket`, `_sum` and `_count` taken off.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !ident(bytes[i - 1]))
            && (expr[i..].starts_with("raftlb_") || expr[i..].starts_with("process_"));
        if !starts {
            i += 1;
            continue;
        }
        let end = (i..bytes.len())
            .find(|j| !ident(bytes[*j]))
            .unwrap_or(bytes.len());
        let name = &expr[i..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        i = end;
    }
    names
}

/// The `expr:` values of a Prometheus rule file: one line (`expr: X`) or
/// a folded or literal block (`expr: >-` / `expr: |`) of deeper lines.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !rest.starts_with('>') && !rest.starts_with('|') {
            exprs.push(rest.to_string());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[n + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim())
            .collect();
        exprs.push(block.join(" "));
    }
    exprs
}

fn dashboard() -> serde_json::Value {
    let path = deploy("grafana/raftlb.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query of the dashboard: the panels' targets (rows included) and
/// the template variables'.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// A dashboard query as Prometheus would get it from Grafana.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$job", "raftlb")
        .replace("$instance", ".*")
        .replace("$pool", ".*")
}

/// Every metric name the alerts and the dashboard use, and where.
fn names_used() -> BTreeMap<String, &'static str> {
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("alerts.yml");
    let mut used = BTreeMap::new();
    for expr in rule_exprs(&alerts) {
        used.extend(names_in(&expr).into_iter().map(|n| (n, "alerts.yml")));
    }
    for expr in dashboard_exprs(&dashboard()) {
        for name in names_in(&expr) {
            used.entry(name).or_insert("raftlb.json");
        }
    }
    used
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let Some(promtool) = promtool("alert rules") else {
        return;
    };
    let rules = deploy("prometheus/alerts.yml");
    let (code, text) = run_promtool(&["check", "rules", rules.to_str().expect("path")], None);
    println!("{promtool} check rules:\n{text}");
    assert_eq!(code, 0, "promtool check rules failed:\n{text}");
    let tests = deploy("prometheus/alerts.test.yml");
    let (code, text) = run_promtool(&["test", "rules", tests.to_str().expect("path")], None);
    println!("{promtool} test rules:\n{text}");
    assert_eq!(code, 0, "promtool test rules failed:\n{text}");
    // Every alert has a unit test.
    let alerts = std::fs::read_to_string(&rules).expect("alerts.yml");
    let unit_tests = std::fs::read_to_string(&tests).expect("alerts.test.yml");
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(names.len() >= 10, "only {} alerts: {names:?}", names.len());
    for name in names {
        assert!(
            unit_tests.contains(&format!("alertname: {name}\n")),
            "alert {name} has no unit test in alerts.test.yml"
        );
    }
    let config = deploy("prometheus/prometheus.yml");
    let (code, text) = run_promtool(&["check", "config", config.to_str().expect("path")], None);
    assert_eq!(code, 0, "promtool check config failed:\n{text}");
}

#[test]
fn every_dashboard_query_parses_and_the_variables_are_there() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"].as_array().expect("templating");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name);
    let datasource = variable("datasource").expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    assert!(
        variable("instance").is_some() && variable("pool").is_some(),
        "{variables:?}"
    );
    let rows: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for row in [
        "Cluster",
        "VIPs",
        "Traffic",
        "Backends",
        "Limits",
        "Sticky sessions",
        "Process",
    ] {
        assert!(rows.contains(&row), "no row {row} in {rows:?}");
    }
    let Some(_) = promtool("dashboard queries") else {
        return;
    };
    // Each query becomes a recording rule, which promtool parses.
    let exprs: Vec<String> = dashboard_exprs(&dashboard)
        .iter()
        .filter(|e| !e.starts_with("label_values("))
        .map(|e| as_promql(e))
        .collect();
    assert!(exprs.len() > 30, "only {} queries", exprs.len());
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "      - record: dashboard:query{i}\n        expr: '{}'\n",
                e.replace('\'', "''")
            )
        })
        .collect();
    let dir = raftlb_tests::process::TempDir::new("dashboard");
    let file = dir.write(
        "dashboard.rules.yml",
        &format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    );
    let (code, text) = run_promtool(&["check", "rules", file.to_str().expect("path")], None);
    assert_eq!(code, 0, "a dashboard query does not parse:\n{text}");
    println!("{} dashboard queries parse", exprs.len());
}

/// A one-node cluster (TLS, a listener, a pool of one live backend) after
/// `requests` requests; its scrape.
async fn scraped_node(requests: usize) -> (Cluster, String) {
    let backend = HttpBackend::start("b1").await;
    let cluster = Cluster::start(1, &http_seed("round_robin", &[backend.address])).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let client = http1();
    for _ in 0..requests {
        let (status, _) = get(&client, &format!("http://{}/", cluster.members[0].http)).await;
        assert_eq!(status, 200);
    }
    let metrics = format!("127.0.0.1:{}", cluster.metrics_port);
    // The leader commits its first entry (the seed) soon after electing itself.
    let scrape = wait::value("a scrape with an applied entry", Duration::from_secs(10), || {
        let scrape = scrape(&metrics);
        (value(&scrape, "raftlb_raft_applied_index") > 0.0).then_some(scrape)
    })
    .await;
    drop(backend);
    (cluster, scrape)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_scrape_passes_promtool_with_sane_values() {
    let (_cluster, scrape) = scraped_node(20).await;
    if promtool("a node's scrape").is_some() {
        check_metrics(&scrape);
    }
    let v = |series: &str| value(&scrape, series);
    assert_eq!(v("raftlb_raft_leader"), 1.0);
    assert!(v("raftlb_raft_term") >= 1.0);
    assert!(
        v("raftlb_raft_leader_changes_total") >= 1.0,
        "it saw itself elected"
    );
    let (commit, applied, last) = (
        v("raftlb_raft_commit_index"),
        v("raftlb_raft_applied_index"),
        v("raftlb_raft_last_log_index"),
    );
    assert!(
        last >= commit && commit >= applied && applied > 0.0,
        "last {last} commit {commit} applied {applied}"
    );
    assert_eq!(v("raftlb_raft_members{role=\"voter\"}"), 1.0);
    assert_eq!(v("raftlb_raft_members{role=\"learner\"}"), 0.0);
    assert!(v("raftlb_raft_proposal_queue_depth") >= 0.0);
    assert!(v("raftlb_raft_snapshot_bytes") >= 0.0 && v("raftlb_raft_snapshot_index") <= applied);
    assert_eq!(v("raftlb_no_quorum_seconds"), 0.0);
    assert_eq!(v("raftlb_vip_lease_misses_total"), 0.0);
    let (rss, virt) = (
        v("process_resident_memory_bytes"),
        v("process_virtual_memory_bytes"),
    );
    assert!(rss > 1e6 && virt >= rss, "rss {rss} virtual {virt}");
    let (open, max) = (v("process_open_fds"), v("process_max_fds"));
    assert!(open > 0.0 && max > open, "open {open} max {max}");
    assert!(v("process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = v("process_start_time_seconds");
    assert!(
        (now - 120.0..=now + 1.0).contains(&started),
        "started {started}, now {now}"
    );
    let build = format!(
        "raftlb_build_info{{version=\"{}\",format=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        raftlb_config::format::CURRENT
    );
    assert_eq!(v(&build), 1.0);
    println!(
        "scrape: term {} commit {commit} applied {applied} rss {:.1} MiB fds {open}/{max} {} series",
        v("raftlb_raft_term"),
        rss / 1048576.0,
        samples(&scrape).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_the_alerts_and_dashboard_use_is_scraped() {
    let (_cluster, scrape) = scraped_node(5).await;
    let scraped = scraped_names(&scrape);
    let used = names_used();
    assert!(used.len() > 20, "only {} names: {used:?}", used.len());
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !scraped.contains(*name))
        .map(|(name, file)| format!("{name} ({file})"))
        .collect();
    println!("{} names used, {} missing", used.len(), missing.len());
    assert!(
        missing.is_empty(),
        "used but not in a real scrape:\n  {}",
        missing.join("\n  ")
    );
}

/// Two balancers in namespaces, each with the VIP and `/metrics` on
/// port 9100; the cluster id of the shared test certificates.
const VIP_CLUSTER: &str = "metrics-vip";
const VIP: &str = "198.18.0.100/24";

fn vip_config(lab: &Lab, id: u64) -> String {
    let me = lab.address(&format!("lb{id}"));
    let peers: Vec<String> = (1..=2)
        .map(|n| format!("{n} = \"{}:7000\"", lab.address(&format!("lb{n}"))))
        .collect();
    format!(
        "[node]\nid = {id}\ndata_dir = \"data\"\ndrain_timeout = \"1s\"\nmetrics = \"{me}:9100\"\n\n\
         [cluster]\nid = \"{VIP_CLUSTER}\"\nraft = \"{me}:7000\"\npeers = {{ {} }}\n{}\n\
         [[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"0.0.0.0:8080\"\npool = \"app\"\n\n\
         [[pool]]\nname = \"app\"\nbackends = [{{ address = \"198.18.0.9:80\" }}]\n\n\
         [[vip]]\naddress = \"{VIP}\"\ninterface = \"eth0\"\n",
        peers.join(", "),
        raftlb_tests::pki::shared(VIP_CLUSTER).node_section(id),
    )
}

fn scrape_on(lab: &Lab, host: &str) -> String {
    let address = format!("{}:9100", lab.address(host));
    on_host(&lab.ns(host), move || scrape(&address))
}

/// `raftlb_vip_held` for the VIP on each of `hosts`, if every one reports it.
fn held(lab: &Lab, hosts: &[&str]) -> Option<Vec<f64>> {
    let series = format!("raftlb_vip_held{{vip=\"{VIP}\"}}");
    hosts
        .iter()
        .map(|h| samples(&scrape_on(lab, h)).get(&series).copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_the_vip_and_one_holds_it() {
    if !root_or_skip("VIP metrics", "build network namespaces and add VIPs") {
        assert!(
            std::env::var("RAFTLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "RAFTLB_REQUIRE_TOOLS=1 but not root"
        );
        return;
    }
    let lab = Lab::build(&["lb1", "lb2"]);
    let mut nodes: Vec<Raftlb> = (1..=2)
        .map(|id| Raftlb::spawn_in(&lab.ns(&format!("lb{id}")), &vip_config(&lab, id)))
        .collect();
    for node in &mut nodes {
        node.ready(&[]).await;
    }
    let hosts = ["lb1", "lb2"];
    let both = wait::value(
        "one node holds the VIP, the other reports 0",
        Duration::from_secs(15),
        || held(&lab, &hosts).filter(|h| h.iter().sum::<f64>() == 1.0),
    )
    .await;
    let holder = both.iter().position(|h| *h == 1.0).expect("a holder");
    let other = 1 - holder;
    println!("raftlb_vip_held: lb1 {} lb2 {}", both[0], both[1]);
    let scrape = wait::value("the holder renews its lease", Duration::from_secs(10), || {
        let scrape = scrape_on(&lab, hosts[holder]);
        (value(&scrape, "raftlb_vip_lease_renewals_total") > 0.0).then_some(scrape)
    })
    .await;
    assert_eq!(value(&scrape, "raftlb_raft_leader"), 1.0, "the VIP holder leads");
    assert_eq!(value(&scrape, "raftlb_vip_lease_misses_total"), 0.0);
    if promtool("VIP node scrape").is_some() {
        check_metrics(&scrape);
    }
    // The other voter dies: the holder loses its quorum, misses its lease
    // and releases the VIP; it still reports it, as 0 ("held by nobody").
    nodes[other].kill();
    let after = wait::value(
        "the holder reports the VIP released",
        Duration::from_secs(15),
        || {
            let scrape = scrape_on(&lab, hosts[holder]);
            (value(&scrape, &format!("raftlb_vip_held{{vip=\"{VIP}\"}}")) == 0.0).then_some(scrape)
        },
    )
    .await;
    assert!(value(&after, "raftlb_vip_lease_misses_total") >= 1.0, "{after}");
    let without = wait::value("the holder reports no quorum", Duration::from_secs(15), || {
        let seconds = value(&scrape_on(&lab, hosts[holder]), "raftlb_no_quorum_seconds");
        (seconds > 0.0).then_some(seconds)
    })
    .await;
    println!(
        "after the other voter's kill: VIP held 0, lease renewals {}, misses {}, no quorum for {without:.1} s",
        value(&after, "raftlb_vip_lease_renewals_total"),
        value(&after, "raftlb_vip_lease_misses_total"),
    );
}
