//! The QUIC keys of a listener (`http3`, `http3_bind`, `http3_early_data`,
//! `http3_retry_threshold`; `quic`): what the file accepts, each refusal
//! naming the file, the key and why, and the UDP address HTTP/3 takes.

use raftlb_config::{Command, parse};

fn file(protocol: &str, extra: &str, more: &str) -> String {
    format!(
        "[node]\nid = 1\n\n[[listener]]\nname = \"web\"\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:8443\"\n\
         pool = \"app\"\n{extra}\n\n{more}[[pool]]\nname = \"app\"\n\
         backends = [{{ address = \"127.0.0.1:9001\" }}]\n"
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
        "https",
        "http3 = true\nhttp3_bind = \"127.0.0.1:9443\"\nhttp3_early_data = true\nhttp3_retry_threshold = 0",
        "",
    );
    let config = parse("lb.toml", &text).expect("valid");
    let listener = &config.cluster.listeners[0];
    assert!(listener.quic.http3 && listener.quic.early_data);
    assert_eq!(listener.quic.retry_threshold, 0);
    assert_eq!(listener.http3_bind(), Some("127.0.0.1:9443".parse().unwrap()));
    assert_eq!(Command::Bootstrap(config.cluster).format_needed(), 5);
    // On the listener's own port by default.
    let plain = parse("lb.toml", &file("https", "http3 = true", "")).expect("valid");
    assert_eq!(
        plain.cluster.listeners[0].http3_bind(),
        Some("127.0.0.1:8443".parse().unwrap())
    );
    let udp = parse("lb.toml", &file("udp", "quic = true", "")).expect("valid");
    assert!(udp.cluster.listeners[0].quic.route_by_connection_id);
    assert_eq!(udp.cluster.listeners[0].http3_bind(), None);
}

#[test]
fn each_key_is_refused_where_it_does_not_apply() {
    let on_http = errors(&file("http", "http3 = true", ""));
    assert!(
        on_http.contains("lb.toml")
            && on_http.contains("http3")
            && on_http.contains("only applies to https listeners"),
        "{on_http}"
    );
    let alone = errors(&file("https", "http3_early_data = true", ""));
    assert!(
        alone.contains("http3_early_data") && alone.contains("only applies with http3 = true"),
        "{alone}"
    );
    let quic_on_tcp = errors(&file("tcp", "quic = true", ""));
    assert!(
        quic_on_tcp.contains("only applies to udp listeners"),
        "{quic_on_tcp}"
    );
    let bad = errors(&file("https", "http3 = true\nhttp3_bind = \"nowhere\"", ""));
    assert!(bad.contains("http3_bind"), "{bad}");
}

#[test]
fn http3_takes_its_udp_address_from_other_listeners() {
    // A udp listener on the port HTTP/3 takes: refused (TCP alone would not clash).
    let clash = errors(&file(
        "https",
        "http3 = true",
        "[[listener]]\nname = \"dns\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:8443\"\npool = \"app\"\n\n",
    ));
    assert!(clash.contains("conflicts"), "{clash}");
    let apart = file(
        "https",
        "http3 = true",
        "[[listener]]\nname = \"dns\"\nprotocol = \"udp\"\nbind = \"127.0.0.1:8053\"\npool = \"app\"\n\n",
    );
    parse("lb.toml", &apart).expect("valid");
}
