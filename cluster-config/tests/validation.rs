//! Every validation rule, each checked for the key path and line it names.

use raftlb_config::{Algorithm, Protocol, parse};
use std::time::Duration;

const VALID: &str = r#"
[node]
id = 1
data_dir = "./data/node1"

[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:8080"
pool = "app"

[[pool]]
name = "app"
algorithm = "round_robin"
backends = [
  { address = "127.0.0.1:9001", weight = 1 },
  { address = "127.0.0.1:9002", weight = 3 },
]
"#;

/// Parses `text`, expects failure, returns each error as displayed.
fn errors(text: &str) -> Vec<String> {
    match parse("lb.toml", text) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_one_error(text: &str, expected: &str) {
    let errors = errors(text);
    assert!(
        errors.iter().any(|e| e == expected),
        "expected the error\n  {expected}\ngot\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn the_issue_example_is_valid() {
    let config = parse("lb.toml", VALID).expect("valid");
    assert_eq!(config.node.id, 1);
    assert_eq!(config.node.data_dir, "./data/node1");
    let listener = &config.cluster.listeners[0];
    assert_eq!(listener.protocol, Protocol::Http);
    assert_eq!(listener.bind, "127.0.0.1:8080".parse().unwrap());
    let pool = config.cluster.pool("app").expect("pool");
    assert_eq!(pool.algorithm, Algorithm::RoundRobin);
    assert_eq!(pool.backends[1].weight, 3);
    assert_eq!(config.cluster.backend_count(), 2);
}

#[test]
fn defaults_are_filled() {
    let text = "[node]\nid = 7\n[[pool]]\nname = \"p\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
    let config = parse("lb.toml", text).expect("valid");
    assert_eq!(config.node.data_dir, "./data/node7");
    assert_eq!(config.node.drain_timeout, Duration::from_secs(30));
    let pool = &config.cluster.pools[0];
    assert_eq!(pool.algorithm, Algorithm::RoundRobin);
    assert_eq!(pool.backends[0].weight, 1);
    assert_eq!(pool.connect_timeout, Duration::from_secs(3));
}

#[test]
fn the_status_token_file_is_a_path() {
    let text = "[node]\nid = 1\nstatus_token_file = \"/etc/raftlb/status.token\"\n";
    let config = parse("lb.toml", text).expect("valid");
    assert_eq!(
        config.node.status_token_file.as_deref(),
        Some("/etc/raftlb/status.token")
    );
    assert_one_error(
        "[node]\nid = 1\nstatus_token_file = \"\"\n",
        "lb.toml:3: node.status_token_file: an empty path; name the file holding the status page's token",
    );
    assert_eq!(
        parse("lb.toml", "[node]\nid = 1\n")
            .expect("valid")
            .node
            .status_token_file,
        None
    );
}

#[test]
fn invalid_socket_address_names_the_backend() {
    let text = VALID.replace("127.0.0.1:9002", "127.0.0.1:99999");
    assert_one_error(
        &text,
        "lb.toml:17: pool[0].backends[1].address: invalid socket address \"127.0.0.1:99999\" (expected IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")",
    );
}

#[test]
fn unknown_keys_are_reported_with_the_expected_ones() {
    let text = VALID.replace("pool = \"app\"", "pool = \"app\"\nbindd = \"x\"");
    let errors = errors(&text);
    assert!(
        errors.iter().any(
            |e| e.starts_with("lb.toml:11: listener[0].bindd: unknown key (expected one of:")
                && e.contains("bind")
        ),
        "{errors:?}"
    );
    let text = VALID.replace("id = 1", "id = 1\ncolour = \"blue\"");
    assert!(errors_contain(&text, "lb.toml:4: node.colour: unknown key"));
    let text = VALID.replace("[node]", "[nodes]\nid = 1\n[node]");
    assert!(errors_contain(&text, "lb.toml:2: nodes: unknown key"));
}

fn errors_contain(text: &str, prefix: &str) -> bool {
    let errors = errors(text);
    let found = errors.iter().any(|e| e.starts_with(prefix));
    if !found {
        eprintln!("looking for {prefix:?} in {errors:#?}");
    }
    found
}

#[test]
fn duplicate_names() {
    let text =
        format!("{VALID}\n[[pool]]\nname = \"app\"\nbackends = [{{ address = \"127.0.0.1:9003\" }}]\n");
    assert!(errors_contain(
        &text,
        "lb.toml:21: pool[1].name: duplicate pool name \"app\" (first used at pool[0].name)"
    ));
    let text = format!(
        "{VALID}\n[[listener]]\nname = \"web\"\nprotocol = \"tcp\"\nbind = \"127.0.0.1:8081\"\npool = \"app\"\n"
    );
    assert!(errors_contain(
        &text,
        "lb.toml:21: listener[1].name: duplicate listener name \"web\""
    ));
}

#[test]
fn listener_naming_a_missing_pool() {
    let text = VALID.replace("pool = \"app\"", "pool = \"ap\"");
    assert_one_error(
        &text,
        "lb.toml:10: listener[0].pool: no pool named \"ap\" (pools: \"app\")",
    );
}

#[test]
fn bind_conflicts() {
    let second =
        "\n[[listener]]\nname = \"web2\"\nprotocol = \"tcp\"\nbind = \"0.0.0.0:8080\"\npool = \"app\"\n";
    let text = format!("{VALID}{second}");
    assert!(errors_contain(
        &text,
        "lb.toml:23: listener[1].bind: TCP address \"0.0.0.0:8080\" conflicts with listener[0].bind \"127.0.0.1:8080\""
    ));
    // UDP and TCP on the same port do not collide.
    let text = format!("{VALID}{}", second.replace("tcp", "udp"));
    parse("lb.toml", &text).expect("udp beside http on one port is fine");
}

#[test]
fn zero_backends() {
    let text = "[node]\nid = 1\n[[pool]]\nname = \"p\"\nbackends = []\n";
    assert_one_error(
        text,
        "lb.toml:5: pool[0].backends: a pool needs at least one backend",
    );
    let text = "[node]\nid = 1\n[[pool]]\nname = \"p\"\n";
    assert_one_error(text, "lb.toml:3: pool[0].backends: missing required key");
}

#[test]
fn weight_zero_in_a_weighted_pool() {
    let text = VALID
        .replace("round_robin", "weighted_round_robin")
        .replace("weight = 3", "weight = 0");
    let errors = errors(&text);
    assert!(
        errors[0].starts_with("lb.toml:17: pool[0].backends[1].weight: weight 0 is not allowed"),
        "{errors:?}"
    );
}

#[test]
fn unknown_algorithm_and_protocol_list_the_valid_ones() {
    let text = VALID.replace("algorithm = \"round_robin\"", "algorithm = \"fastest\"");
    assert_one_error(
        &text,
        "lb.toml:14: pool[0].algorithm: unknown algorithm \"fastest\" (valid: \"round_robin\", \"weighted_round_robin\", \"least_connections\", \"ip_hash\", \"maglev\", \"random_two\", \"peak_ewma\")",
    );
    let text = VALID.replace("protocol = \"http\"", "protocol = \"quic\"");
    assert_one_error(
        &text,
        "lb.toml:8: listener[0].protocol: unknown protocol \"quic\" (valid: \"http\", \"https\", \"tcp\", \"udp\")",
    );
}

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    let text = VALID
        .replace("id = 1", "id = 0")
        .replace("protocol = \"http\"", "protocol = \"quic\"")
        .replace("127.0.0.1:9002", "nope");
    let errors = errors(&text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("lb.toml:3: node.id: 0 is out of range"));
    assert!(errors[1].starts_with("lb.toml:8: listener[0].protocol"));
    assert!(errors[2].starts_with("lb.toml:17: pool[0].backends[1].address"));
}

#[test]
fn type_errors_name_what_was_expected() {
    let text = VALID.replace("id = 1", "id = \"one\"");
    assert_one_error(&text, "lb.toml:3: node.id: expected an integer, found string");
    let text = VALID.replace("weight = 3", "weight = \"3\"");
    assert_one_error(
        &text,
        "lb.toml:17: pool[0].backends[1].weight: expected an integer, found string",
    );
}

#[test]
fn missing_node_section() {
    let text = VALID.replace("[node]\nid = 1\ndata_dir = \"./data/node1\"\n", "");
    assert!(errors_contain(&text, "lb.toml:1: node: missing required key"));
}

#[test]
fn http_limits_only_on_http_listeners() {
    let text = VALID.replace("protocol = \"http\"", "protocol = \"tcp\"\nmax_headers = 50");
    assert!(errors_contain(
        &text,
        "lb.toml:9: listener[0].max_headers: only applies to http listeners, this one is tcp"
    ));
}

#[test]
fn durations_and_names() {
    let text = VALID.replace("algorithm = \"round_robin\"", "connect_timeout = \"3 parsecs\"");
    assert!(errors_contain(
        &text,
        "lb.toml:14: pool[0].connect_timeout: invalid duration"
    ));
    let text = VALID.replace("name = \"web\"", "name = \"web server\"");
    assert!(errors_contain(
        &text,
        "lb.toml:7: listener[0].name: invalid name \"web server\""
    ));
}

#[test]
fn duplicate_backend_in_a_pool() {
    let text = VALID.replace("127.0.0.1:9002", "127.0.0.1:9001");
    assert!(errors_contain(
        &text,
        "lb.toml:17: pool[0].backends[1]: backend 127.0.0.1:9001 is listed twice"
    ));
}

#[test]
fn syntax_error_has_a_line() {
    let text = VALID.replace("id = 1", "id = = 1");
    let errors = errors(&text);
    assert!(
        errors[0].starts_with("lb.toml:3: TOML syntax error"),
        "{errors:?}"
    );
}

const CLUSTER: &str =
    "[node]\nid = 1\n[cluster]\nid = \"lb\"\ninsecure_cleartext = true\nraft = \"127.0.0.1:7000\"\n";

#[test]
fn cluster_section_and_raft_timing() {
    let config = parse("lb.toml", CLUSTER).expect("valid");
    assert_eq!(config.membership.cluster_id, "lb");
    assert_eq!(
        config.membership.timing.heartbeat_interval,
        Duration::from_millis(50)
    );
    assert_eq!(
        config.membership.timing.election_timeout,
        Duration::from_millis(150)
    );

    let tuned = format!("{CLUSTER}heartbeat_interval = \"20ms\"\nelection_timeout = \"60ms\"\n");
    let config = parse("lb.toml", &tuned).expect("valid");
    assert_eq!(
        config.membership.timing.heartbeat_interval,
        Duration::from_millis(20)
    );
    assert_eq!(
        config.membership.timing.election_timeout,
        Duration::from_millis(60)
    );

    assert_one_error(
        &format!("{CLUSTER}election_timeout = \"100ms\"\n"),
        "lb.toml:7: cluster.election_timeout: election_timeout (100ms) must be at least 3 × heartbeat_interval (50ms)",
    );
    assert_eq!(
        config.membership.vip_on_quorum_loss,
        raftlb_config::VipOnQuorumLoss::Release,
        "the default"
    );
    let hold = parse("lb.toml", &format!("{CLUSTER}vip_on_quorum_loss = \"hold\"\n")).expect("valid");
    assert_eq!(
        hold.membership.vip_on_quorum_loss,
        raftlb_config::VipOnQuorumLoss::Hold
    );
    assert_one_error(
        &format!("{CLUSTER}vip_on_quorum_loss = \"keep\"\n"),
        "lb.toml:7: cluster.vip_on_quorum_loss: unknown vip_on_quorum_loss \"keep\" (valid: \"release\", \"hold\")",
    );
}

#[test]
fn cluster_links_are_tls_or_cleartext_on_loopback() {
    let base = "[node]\nid = 1\n[cluster]\nid = \"lb\"\nraft = \"10.0.0.1:7000\"\n";
    let tls = format!(
        "{base}[cluster.tls]\nca_file = \"/pki/ca.pem\"\ncert_file = \"/pki/node-1.pem\"\nkey_file = \"/pki/node-1.key\"\n"
    );
    let config = parse("lb.toml", &tls).expect("valid");
    assert_eq!(
        config.membership.links,
        raftlb_config::LinkSecurity::Tls(raftlb_config::TlsFiles {
            ca_file: "/pki/ca.pem".into(),
            cert_file: "/pki/node-1.pem".into(),
            key_file: "/pki/node-1.key".into(),
        })
    );
    assert_eq!(config.membership.max_message_bytes, 16 << 20);
    let missing = errors(base);
    assert!(
        missing[0].contains("cluster.tls: missing: set [cluster.tls] ca_file, cert_file and key_file"),
        "{missing:?}"
    );
    let errors_of = |text: &str| errors(text).join("\n");
    let outside = errors_of(&format!("{base}insecure_cleartext = true\n"));
    assert!(
        outside.contains("cluster.insecure_cleartext: insecure_cleartext is allowed only when every Raft address is a loopback address, and node 1's is 10.0.0.1:7000"),
        "{outside}"
    );
    let peer_outside = errors_of(
        "[node]\nid = 1\n[cluster]\nid = \"lb\"\nraft = \"127.0.0.1:7000\"\ninsecure_cleartext = true\npeers = { 1 = \"127.0.0.1:7000\", 2 = \"198.18.0.2:7000\" }\n",
    );
    assert!(
        peer_outside.contains("node 2's is 198.18.0.2:7000"),
        "{peer_outside}"
    );
    let both = errors_of(&format!(
        "{CLUSTER}[cluster.tls]\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\n"
    ));
    assert!(both.contains("not both"), "{both}");
    let token = errors_of(&format!("{CLUSTER}token = \"s3cret\"\n"));
    assert!(
        token.contains("cluster.token: the shared cluster token is gone")
            && token.contains("raftlb certs init"),
        "{token}"
    );
    assert!(
        errors_of(&format!("{base}[cluster.tls]\nca_file = \"a\"\n"))
            .contains("cluster.tls.cert_file: missing")
    );
}

#[test]
fn vips() {
    let text = "[node]\nid = 1\n[[vip]]\naddress = \"198.18.0.100/24\"\ninterface = \"eth0\"\n";
    let config = parse("lb.toml", text).expect("valid");
    assert_eq!(config.vips.len(), 1);
    assert_eq!(
        config.vips[0].address,
        "198.18.0.100".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(config.vips[0].prefix_len, 24);
    assert_eq!(config.vips[0].placement, raftlb_config::Placement::Leader);

    let base = "[node]\nid = 1\n[[vip]]\ninterface = \"eth0\"\n";
    assert_one_error(
        &format!("{base}address = \"198.18.0.100\"\n"),
        "lb.toml:5: vip[0].address: invalid VIP \"198.18.0.100\" (expected ADDRESS/PREFIX, e.g. \"10.10.0.100/24\" or \"2001:db8::100/64\")",
    );
    assert_one_error(
        &format!("{base}address = \"198.18.0.100/33\"\n"),
        "lb.toml:5: vip[0].address: invalid VIP \"198.18.0.100/33\": an IPv4 prefix is at most /32",
    );
    assert_one_error(
        &format!("{base}address = \"2001:2::100/129\"\n"),
        "lb.toml:5: vip[0].address: invalid VIP \"2001:2::100/129\": an IPv6 prefix is at most /128",
    );
    assert_one_error(
        &format!("{base}address = \"ff02::1/64\"\n"),
        "lb.toml:5: vip[0].address: invalid VIP \"ff02::1/64\": a VIP is a unicast address of the interface's subnet",
    );
    for (text, prefix) in [
        ("2001:2::100/64", 64),
        ("2001:2::100/128", 128),
        ("198.18.0.100/32", 32),
    ] {
        let v = parse(
            "lb.toml",
            &format!("{base}address = \"{text}\"\nplacement = \"spread\"\n"),
        )
        .expect("valid");
        let (ip, _) = text.split_once('/').unwrap();
        assert_eq!(v.vips[0].address, ip.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(v.vips[0].prefix_len, prefix);
    }
    let spread = parse(
        "lb.toml",
        &format!("{base}address = \"198.18.0.100/24\"\nplacement = \"spread\"\n"),
    );
    assert_eq!(
        spread.expect("valid").vips[0].placement,
        raftlb_config::Placement::Spread
    );
    assert_one_error(
        "[node]\nid = 1\n[[vip]]\naddress = \"198.18.0.100/24\"\ninterface = \"a/b\"\n",
        "lb.toml:5: vip[0].interface: invalid interface name \"a/b\"",
    );
}

#[test]
fn witness_role() {
    let config = parse("lb.toml", "[node]\nid = 3\nrole = \"witness\"\n").expect("valid");
    assert_eq!(config.node.role, raftlb_config::Role::Witness);
    assert_eq!(
        parse("lb.toml", "[node]\nid = 3\n").expect("valid").node.role,
        raftlb_config::Role::Balancer
    );
    assert_one_error(
        "[node]\nid = 3\nrole = \"witness\"\n[[vip]]\naddress = \"198.18.0.100/24\"\ninterface = \"eth0\"\n",
        "lb.toml:4: vip: a witness owns no VIP (it runs no data plane); remove [[vip]] or set role = \"balancer\"",
    );
}

#[test]
fn certificate_files_need_name_cert_and_key() {
    let text = format!("{VALID}\n[[certificate]]\nname = \"site\"\ncert = \"/etc/site.pem\"\n");
    let errors = errors(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("certificate[0].key: missing required key")),
        "{errors:?}"
    );
    let good = format!(
        "{VALID}\n[[certificate]]\nname = \"site\"\ncert = \"/etc/site.pem\"\nkey = \"/etc/site.key\"\n"
    );
    let config = parse("lb.toml", &good).expect("valid");
    assert_eq!(config.certificate_files[0].key, "/etc/site.key");
}

#[test]
fn peers_may_be_dns_names_that_advertise_names() {
    let tls = "[cluster.tls]\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\n";
    let text = format!(
        "[node]\nid = 1\n[cluster]\nid = \"lb\"\nraft = \"0.0.0.0:7000\"\n\
         advertise = \"raftlb-0.raftlb-peers:7000\"\n\
         peers = {{ 1 = \"raftlb-0.raftlb-peers:7000\", 2 = \"raftlb-1.raftlb-peers:7000\" }}\n{tls}"
    );
    let config = parse("lb.toml", &text).expect("valid");
    assert_eq!(
        config.membership.advertised().map(|a| a.to_string()).as_deref(),
        Some("raftlb-0.raftlb-peers:7000")
    );
    let mismatch = errors(&text.replace("advertise = \"raftlb-0", "advertise = \"raftlb-9"));
    assert!(
        mismatch.iter().any(|e| e.contains(
            "lists node 1 at raftlb-0.raftlb-peers:7000, but this node's advertised address (advertise) is raftlb-9.raftlb-peers:7000"
        )),
        "{mismatch:?}"
    );
    let bad = errors(&text.replace("2 = \"raftlb-1.raftlb-peers:7000\"", "2 = \"raftlb 1:7000\""));
    assert!(
        bad.iter()
            .any(|e| e.starts_with("lb.toml:") && e.contains("invalid address \"raftlb 1:7000\"")),
        "{bad:?}"
    );
    let cleartext = errors(
        "[node]\nid = 1\n[cluster]\nid = \"lb\"\nraft = \"127.0.0.1:7000\"\ninsecure_cleartext = true\n\
         peers = { 1 = \"127.0.0.1:7000\", 2 = \"localhost:7001\" }\n",
    );
    assert!(
        cleartext.iter().any(|e| e.contains("node 2's is localhost:7001")),
        "{cleartext:?}"
    );
}
