//! Shared by the tests of config-file keys: a minimal valid file (one pool
//! `app`, one http listener `web`) to append keys to, and the errors a file
//! gets, as `raftlb check` prints them (`file:line: key: reason`).
#![allow(dead_code)] // each test binary uses the part it needs

use raftlb_config::parse;

/// A valid file whose last section is the listener `web`.
pub const HEAD: &str = r#"
[node]
id = 1

[[pool]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]

[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:8080"
pool = "app"
"#;

/// Every error of `text`, named `lb.toml`; panics if it parses.
pub fn errors(text: &str) -> Vec<String> {
    match parse("lb.toml", text) {
        Ok(_) => panic!("expected errors for\n{text}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `expected` is one of `errors`, word for word.
pub fn has(errors: &[String], expected: &str) {
    assert!(
        errors.iter().any(|e| e == expected),
        "expected\n  {expected}\ngot\n  {}",
        errors.join("\n  ")
    );
}
