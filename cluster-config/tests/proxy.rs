//! The PROXY protocol keys (`accept_proxy`, `proxy_trusted`,
//! `trusted_proxies`, `proxy_protocol`): what the file accepts, each
//! refusal naming the file, the key and why, and how format 3 carries them
//! while format 2 cannot.

use raftlb_config::format::Formats;
use raftlb_config::{ClusterState, Command, Proposal, ProxyVersion, parse};

fn file(listener_extra: &str, pool_extra: &str) -> String {
    format!(
        "[node]\nid = 1\n\n[[listener]]\nname = \"web\"\nprotocol = \"http\"\nbind = \"127.0.0.1:8080\"\n\
         pool = \"app\"\n{listener_extra}\n\n[[pool]]\nname = \"app\"\n\
         backends = [{{ address = \"127.0.0.1:9001\" }}]\n{pool_extra}\n"
    )
}

fn errors(text: &str) -> String {
    match parse("lb.toml", text) {
        Ok(_) => panic!("expected errors in\n{text}"),
        Err(errors) => errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn the_keys_parse_into_the_spec() {
    let text = file(
        "accept_proxy = true\nproxy_trusted = [\"10.0.0.0/8\", \"127.0.0.1\"]\ntrusted_proxies = [\"192.168.0.0/16\"]",
        "proxy_protocol = \"v2\"",
    );
    let config = parse("lb.toml", &text).expect("valid");
    let listener = &config.cluster.listeners[0];
    assert!(listener.accepts_proxy());
    assert_eq!(listener.proxy_trusted.len(), 2);
    assert_eq!(listener.http.trusted_proxies.as_ref().map(Vec::len), Some(1));
    assert_eq!(config.cluster.pools[0].proxy_protocol, Some(ProxyVersion::V2));
    assert_eq!(Command::Bootstrap(config.cluster).format_needed(), 3);
    let plain = parse("lb.toml", &file("", "")).expect("valid");
    assert!(!plain.cluster.listeners[0].accepts_proxy());
    assert_eq!(plain.cluster.listeners[0].http.trusted_proxies, None);
    assert_eq!(Command::Bootstrap(plain.cluster).format_needed(), 1);
}

#[test]
fn accept_proxy_needs_trusted_sources() {
    let missing = errors(&file("accept_proxy = true", ""));
    assert!(
        missing.contains("lb.toml") && missing.contains("proxy_trusted"),
        "{missing}"
    );
    assert!(
        missing.contains("accept_proxy = true needs the sources trusted"),
        "{missing}"
    );
    let empty = errors(&file("accept_proxy = true\nproxy_trusted = []", ""));
    assert!(
        empty.contains("listener[0].proxy_trusted") && empty.contains("at least one network"),
        "{empty}"
    );
    let alone = errors(&file("proxy_trusted = [\"10.0.0.0/8\"]", ""));
    assert!(alone.contains("only applies with accept_proxy = true"), "{alone}");
    let bad = errors(&file("accept_proxy = true\nproxy_trusted = [\"10.0.0.1/8\"]", ""));
    assert!(
        bad.contains("proxy_trusted") && bad.contains("bits set after the prefix"),
        "{bad}"
    );
    let twice = errors(&file(
        "accept_proxy = true\nproxy_trusted = [\"10.0.0.0/8\", \"10.0.0.0/8\"]",
        "",
    ));
    assert!(twice.contains("listed twice"), "{twice}");
}

#[test]
fn proxy_keys_apply_where_they_make_sense() {
    let udp = "[node]\nid = 1\n\n[[listener]]\nname = \"dns\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:53\"\npool = \"app\"\n\
               accept_proxy = true\nproxy_trusted = [\"10.0.0.0/8\"]\n\n[[pool]]\nname = \"app\"\n\
               backends = [{ address = \"127.0.0.1:9001\" }]\n";
    let udp = errors(udp);
    assert!(
        udp.contains("accept_proxy") && udp.contains("this one is udp"),
        "{udp}"
    );
    let tcp = "[node]\nid = 1\n\n[[listener]]\nname = \"db\"\nprotocol = \"tcp\"\nbind = \"127.0.0.1:5432\"\npool = \"app\"\n\
               trusted_proxies = [\"10.0.0.0/8\"]\n\n[[pool]]\nname = \"app\"\n\
               backends = [{ address = \"127.0.0.1:9001\" }]\n";
    let tcp = errors(tcp);
    assert!(
        tcp.contains("trusted_proxies") && tcp.contains("only applies to http listeners"),
        "{tcp}"
    );
    let version = errors(&file("", "proxy_protocol = \"v3\""));
    assert!(
        version.contains("pool[0].proxy_protocol") && version.contains("v1"),
        "{version}"
    );
}

fn proxy_pool_command() -> Command {
    let config = parse("lb.toml", &file("", "proxy_protocol = \"v1\"")).expect("valid");
    Command::AddPool(config.cluster.pools[0].clone())
}

#[test]
fn format_three_carries_the_new_fields_and_older_formats_cannot() {
    let command = proxy_pool_command();
    assert_eq!(command.format_needed(), 3);
    assert!(Formats::BUILT.contains(3));
    let three = Proposal::new(3, command.clone());
    assert_eq!(Proposal::decode(&three.encode().unwrap()).unwrap(), three);
    // Older formats have no room for them: refused, never dropped.
    for older in [1, 2] {
        assert!(
            Proposal::new(older, command.clone()).encode().is_err(),
            "format {older}"
        );
    }
}

#[test]
fn a_state_refuses_what_its_version_cannot_hold() {
    let mut state = ClusterState::default();
    assert!(state.apply(Command::SetClusterVersion(2)).is_applied());
    let refused = state.apply(proxy_pool_command());
    assert!(
        refused.rejection().contains("needs cluster version 3"),
        "{refused:?}"
    );
    assert!(state.apply(Command::SetClusterVersion(3)).is_applied());
    assert!(state.apply(proxy_pool_command()).is_applied());
}
