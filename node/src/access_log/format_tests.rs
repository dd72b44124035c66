use super::*;
use crate::access_log::record::{StickyOutcome, TlsInfo};
use crate::view::ClusterView;
use http::HeaderValue;
use http::header::{REFERER, USER_AGENT};
use std::sync::Arc;

/// A view with listener "web" and pool "app", as a file seeds them.
fn view() -> ClusterView {
    let config = raftlb_config::parse(
        "t.toml",
        "[node]\nid = 1\n[[listener]]\nname = \"web\"\nprotocol = \"https\"\nbind = \"127.0.0.1:8443\"\npool = \"app\"\n\
         [[pool]]\nname = \"app\"\nbackends = [{ address = \"127.0.0.1:9000\" }]\n",
    )
    .expect("valid config");
    let mut state = raftlb_config::ClusterState::default();
    state.apply(raftlb_config::Command::Bootstrap(config.cluster));
    ClusterView::build(&state, 1, None, None)
}

/// A finished request to `target` with `agent` as its user agent.
fn record(target: &str, agent: &[u8]) -> Record {
    let view = view();
    let mut request = http::Request::builder()
        .method("GET")
        .uri(target)
        .header(REFERER, "https://example.test/a")
        .header("x-request-id", "rid-1")
        .body(())
        .expect("request");
    request
        .headers_mut()
        .insert(USER_AGENT, HeaderValue::from_bytes(agent).expect("header bytes"));
    let listener = Arc::clone(view.listener("web").expect("listener"));
    let tls = TlsInfo {
        version: "TLSv1.3",
        sni: Some("a.example.test".into()),
    };
    let mut record = Record::http(
        listener,
        "10.1.2.3:5555".parse().unwrap(),
        Some(tls),
        &mut request,
    );
    record.time = SystemTime::UNIX_EPOCH + Duration::from_millis(971_186_136_123);
    record.pool = view.pool("app").cloned();
    record.backend = Some("127.0.0.1:9000".parse().unwrap());
    record.status = Some(200);
    record.sent = 1234;
    record.received = 5;
    record.connect = Some(Duration::from_millis(1));
    record.first_byte = Some(Duration::from_millis(2));
    record.total = Duration::from_millis(3);
    record.sticky = StickyOutcome::Hit;
    record.retries = 1;
    record
}

fn line(record: &Record, format: fn(&Record, &mut String)) -> String {
    let mut out = String::new();
    format(record, &mut out);
    assert!(
        out.ends_with('\n') && out.matches('\n').count() == 1,
        "one line: {out:?}"
    );
    out.trim_end().to_string()
}

#[test]
fn a_combined_line_is_apaches_with_nginx_style_fields_after() {
    let got = line(&record("/a/b?c=d", b"curl/8.0"), combined);
    assert_eq!(
        got,
        "10.1.2.3 - - [10/Oct/2000:13:55:36 +0000] \"GET /a/b?c=d HTTP/1.1\" 200 1234 \
         \"https://example.test/a\" \"curl/8.0\" rt=0.003 uct=0.001 uht=0.002 rid=rid-1 \
         backend=127.0.0.1:9000 listener=web pool=app sticky=hit retries=1 tls=TLSv1.3 sni=a.example.test"
    );
}

#[test]
fn quotes_backslashes_controls_and_other_bytes_are_escaped() {
    let got = line(&record("/p", b"say \"hi\" \\ \t\xff\xc3\xa9"), combined);
    assert!(got.contains(r#""say \"hi\" \\ \x09\xFF\xC3\xA9""#), "{got}");
    let json = line(&record("/p", b"say \"hi\" \\ \t\xff\xc3\xa9"), json);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    // Valid UTF-8 stays itself; the lone \xff is kept visibly.
    assert_eq!(parsed["user_agent"], "say \"hi\" \\ \t\\xFFé");
}

#[test]
fn a_path_with_non_ascii_bytes_stays_on_one_line() {
    // http's parser takes UTF-8 in a path (and refuses other bytes above 0x7f).
    let uri = http::Uri::from_maybe_shared(bytes::Bytes::from_static(b"/caf\xc3\xa9?q=\xe2\x82\xac"))
        .expect("UTF-8 in a path");
    let mut r = record("/", b"ua");
    r.request.as_mut().expect("http").target = uri;
    let got = line(&r, combined);
    assert!(
        got.contains("\"GET /caf\\xC3\\xA9?q=\\xE2\\x82\\xAC HTTP/1.1\""),
        "{got}"
    );
    let json: serde_json::Value = serde_json::from_str(&line(&r, json)).expect("JSON");
    assert_eq!(json["path"], "/café?q=€");
    assert_eq!(text(b"/caf\xff\xc3\xa9"), "/caf\\xFFé");
}

#[test]
fn a_json_line_has_every_field_by_its_documented_name() {
    let json: serde_json::Value =
        serde_json::from_str(&line(&record("/a?b", b"ua"), json)).expect("valid JSON");
    let expected = serde_json::json!({
        "time": "2000-10-10T13:55:36.123Z",
        "request_id": "rid-1",
        "client": "10.1.2.3",
        "client_port": 5555,
        "listener": "web",
        "pool": "app",
        "backend": "127.0.0.1:9000",
        "method": "GET",
        "path": "/a?b",
        "protocol": "HTTP/1.1",
        "status": 200,
        "bytes_received": 5,
        "bytes_sent": 1234,
        "connect_seconds": 0.001,
        "first_byte_seconds": 0.002,
        "total_seconds": 0.003,
        "tls_version": "TLSv1.3",
        "sni": "a.example.test",
        "sticky": "hit",
        "retries": 1,
        "referer": "https://example.test/a",
        "user_agent": "ua",
    });
    assert_eq!(json, expected);
}

#[test]
fn an_l4_connection_has_no_request_and_no_status() {
    let view = view();
    let listener = Arc::clone(view.listener("web").expect("listener"));
    let mut r = Record::connection(listener, "10.1.2.3:5555".parse().unwrap());
    r.time = SystemTime::UNIX_EPOCH;
    r.sent = 10;
    let got = line(&r, combined);
    assert!(
        got.starts_with("10.1.2.3 - - [01/Jan/1970:00:00:00 +0000] \"- - TCP\" - 10 \"-\" \"-\" rt="),
        "{got}"
    );
    let json: serde_json::Value = serde_json::from_str(&line(&r, json)).expect("JSON");
    assert_eq!(json["protocol"], "TCP");
    assert!(json["status"].is_null() && json["request_id"].is_null() && json["backend"].is_null());
}
