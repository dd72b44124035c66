//! A pool's balancing keys: `algorithm`, and `hash_key`, what `maglev`
//! hashes (`source_ip`, `header:NAME`, `cookie:NAME` or `path`).

use crate::reader::{Reader, Section};
use crate::spec::{Algorithm, HashKey};
use crate::validate;

/// `algorithm` (default `round_robin`) and `hash_key` (default `source_ip`).
pub(super) fn algorithm(
    reader: &mut Reader<'_>,
    s: &mut Section<'_, '_>,
) -> (Option<Algorithm>, Option<HashKey>) {
    let algorithm = match s.optional("algorithm") {
        Some(f) => reader.choice(&f, "algorithm", &Algorithm::ALL),
        None => Some(Algorithm::RoundRobin),
    };
    (algorithm, hash_key(reader, s, algorithm))
}

/// `hash_key`, checked against the pool's `algorithm` (`None` when that
/// was invalid): only `maglev` takes one.
fn hash_key(
    reader: &mut Reader<'_>,
    s: &mut Section<'_, '_>,
    algorithm: Option<Algorithm>,
) -> Option<HashKey> {
    let Some(f) = s.optional("hash_key") else {
        return Some(HashKey::default());
    };
    let text = reader.str(&f)?;
    let named = |prefix: &str| text.strip_prefix(prefix).map(str::to_string);
    let key = match text {
        "source_ip" => Some(HashKey::SourceIp),
        "path" => Some(HashKey::Path),
        _ => named("header:")
            .filter(|n| validate::token("header", n).is_ok())
            .map(HashKey::Header)
            .or_else(|| {
                named("cookie:")
                    .filter(|n| validate::token("cookie", n).is_ok())
                    .map(HashKey::Cookie)
            }),
    };
    let Some(key) = key else {
        reader.field_error(
            &f,
            format!(
                "invalid hash_key \"{text}\" (valid: \"source_ip\", \"header:NAME\", \"cookie:NAME\", \"path\")"
            ),
        );
        return None;
    };
    match algorithm {
        Some(Algorithm::Maglev) | None => Some(key),
        Some(other) => {
            let why = match other {
                Algorithm::IpHash => "ip_hash always hashes the source IP".to_string(),
                _ => format!("{} hashes nothing", other.name()),
            };
            reader.field_error(&f, format!("only applies to algorithm = \"maglev\" ({why})"));
            None
        }
    }
}
