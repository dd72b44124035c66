//! The balancing keys of a pool: every algorithm by name, `hash_key` and
//! its errors (each naming the file, line and key).

use raftlb_config::{Algorithm, HashKey, parse};

/// An http listener `web` and a pool `app` with `pool_keys` added.
fn config(protocol: &str, pool_keys: &str) -> String {
    format!(
        "[node]\nid = 1\n\n[[listener]]\nname = \"web\"\nprotocol = \"{protocol}\"\nbind = \"127.0.0.1:8080\"\npool = \"app\"\n\n[[pool]]\nname = \"app\"\n{pool_keys}\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n"
    )
}

fn errors(text: &str) -> Vec<String> {
    match parse("lb.toml", text) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn assert_one_error(text: &str, expected: &str) {
    let errors = errors(text);
    assert_eq!(errors, [expected.to_string()], "for\n{text}");
}

#[test]
fn every_algorithm_parses_by_its_name() {
    for (name, algorithm) in Algorithm::ALL {
        let text = config("http", &format!("algorithm = \"{name}\""));
        let parsed = parse("lb.toml", &text).expect("valid");
        let pool = parsed.cluster.pool("app").expect("pool");
        assert_eq!(pool.algorithm, algorithm);
        assert_eq!(algorithm.name(), name);
        assert_eq!(pool.hash_key, HashKey::SourceIp, "the default");
    }
}

#[test]
fn hash_key_takes_each_form() {
    for (text, key) in [
        ("source_ip", HashKey::SourceIp),
        ("path", HashKey::Path),
        ("header:X-User", HashKey::Header("X-User".to_string())),
        ("cookie:session_id", HashKey::Cookie("session_id".to_string())),
    ] {
        let file = config("http", &format!("algorithm = \"maglev\"\nhash_key = \"{text}\""));
        let parsed = parse("lb.toml", &file).expect("valid");
        assert_eq!(parsed.cluster.pool("app").expect("pool").hash_key, key);
        assert_eq!(key.to_string(), text);
    }
}

#[test]
fn a_bad_hash_key_is_named_with_the_valid_forms() {
    let valid = "(valid: \"source_ip\", \"header:NAME\", \"cookie:NAME\", \"path\")";
    for bad in ["ip", "header:", "cookie:a b", "header:X:Y", "Path"] {
        let text = config("http", &format!("algorithm = \"maglev\"\nhash_key = \"{bad}\""));
        assert_one_error(
            &text,
            &format!("lb.toml:13: pool[0].hash_key: invalid hash_key \"{bad}\" {valid}"),
        );
    }
    let text = config("http", "algorithm = \"maglev\"\nhash_key = 3");
    let errors = errors(&text);
    assert!(
        errors.len() == 1 && errors[0].starts_with("lb.toml:13: pool[0].hash_key: "),
        "{errors:?}"
    );
}

#[test]
fn hash_key_only_goes_with_maglev() {
    assert_one_error(
        &config("http", "algorithm = \"ip_hash\"\nhash_key = \"path\""),
        "lb.toml:13: pool[0].hash_key: only applies to algorithm = \"maglev\" (ip_hash always hashes the source IP)",
    );
    assert_one_error(
        &config("http", "hash_key = \"source_ip\""),
        "lb.toml:12: pool[0].hash_key: only applies to algorithm = \"maglev\" (round_robin hashes nothing)",
    );
    // An unknown algorithm is reported once, not again through hash_key.
    let errors = errors(&config("http", "algorithm = \"magleb\"\nhash_key = \"path\""));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("lb.toml:12: pool[0].algorithm: unknown algorithm \"magleb\""));
}

#[test]
fn l4_listeners_refuse_keys_only_http_carries() {
    for protocol in ["tcp", "udp"] {
        for key in ["header:X-User", "cookie:sid", "path"] {
            let text = config(protocol, &format!("algorithm = \"maglev\"\nhash_key = \"{key}\""));
            assert_one_error(
                &text,
                &format!(
                    "lb.toml:8: listener[0].pool: pool \"app\" hashes hash_key = \"{key}\", which a {protocol} listener cannot see; use hash_key = \"source_ip\""
                ),
            );
        }
        let text = config(protocol, "algorithm = \"maglev\"\nhash_key = \"source_ip\"");
        assert!(parse("lb.toml", &text).is_ok());
    }
}
