//! The `[pool.sticky]` section of the file: a pool's sticky-session policy.

use crate::limits::{MAX_LEARN_RATE, MAX_STICKY_ENTRIES, MIN_STICKY_TTL};
use crate::reader::{Reader, Section};
use crate::sticky::{CookieAttributes, SameSite, StickyContract, StickyKind, StickyPolicy};
use crate::validate;

/// `[pool.sticky]`: `kind`, `name`, `ttl`, `contract`, `source_prefix`,
/// `source_prefix_v6`, the table's bounds (`max_entries`, `learn_rate`,
/// `learn_burst`) and the cookie attributes.
pub(super) fn sticky(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<StickyPolicy> {
    let kind_field = s.required(reader, "kind");
    let kind = kind_field
        .as_ref()
        .and_then(|f| reader.choice(f, "sticky kind", &StickyKind::ALL));
    let name = match (s.optional("name"), kind) {
        (Some(f), Some(StickyKind::SourceIp)) => {
            reader.field_error(&f, "kind \"source_ip\" takes no name");
            None
        }
        (Some(f), _) => reader
            .str(&f)
            .and_then(|n| reader.checked(&f, n.to_string(), validate::token("cookie or header", n))),
        (None, Some(StickyKind::Cookie)) => Some(StickyPolicy::DEFAULT_COOKIE.to_string()),
        (None, Some(StickyKind::SourceIp)) => Some(String::new()),
        (None, Some(other)) => {
            if let Some(f) = &kind_field {
                reader.field_error(
                    f,
                    format!(
                        "kind \"{}\" needs a name (the cookie or header that identifies a session)",
                        other.name()
                    ),
                );
            }
            None
        }
        (None, None) => None,
    };
    let ttl = s.optional("ttl").map(|f| {
        reader.duration(&f).and_then(|ttl| {
            if ttl < MIN_STICKY_TTL {
                let least = crate::duration::format(MIN_STICKY_TTL);
                reader.field_error(&f, format!("a sticky ttl must be at least {least}"));
                return None;
            }
            Some(ttl)
        })
    });
    let contract = s
        .optional("contract")
        .map(|f| reader.choice(&f, "contract", &StickyContract::ALL));
    let prefix_v4 = s
        .optional("source_prefix")
        .map(|f| reader.uint(&f, 0, 32).map(|n| n as u8));
    let prefix_v6 = s
        .optional("source_prefix_v6")
        .map(|f| reader.uint(&f, 0, 128).map(|n| n as u8));
    let mut cookie = CookieAttributes::default();
    let mut cookie_ok = true;
    for key in ["path", "secure", "http_only", "same_site", "max_age"] {
        let Some(f) = s.optional(key) else { continue };
        if kind.is_some_and(|k| k != StickyKind::Cookie) {
            reader.field_error(&f, format!("\"{key}\" only applies to kind = \"cookie\""));
            cookie_ok = false;
            continue;
        }
        let ok = match key {
            "path" => reader
                .str(&f)
                .and_then(|p| reader.checked(&f, p, validate::cookie_path(p)))
                .map(|p| cookie.path = p.to_string())
                .is_some(),
            "secure" => reader.bool(&f).map(|b| cookie.secure = b).is_some(),
            "http_only" => reader.bool(&f).map(|b| cookie.http_only = b).is_some(),
            "max_age" => reader.bool(&f).map(|b| cookie.max_age = b).is_some(),
            _ => match reader.str(&f) {
                Some("") => {
                    cookie.same_site = None;
                    true
                }
                Some(_) => reader
                    .choice(&f, "same_site", &SameSite::ALL)
                    .map(|v| cookie.same_site = Some(v))
                    .is_some(),
                None => false,
            },
        };
        cookie_ok &= ok;
    }
    let max_entries = table_bound(reader, &mut s, kind, "max_entries", MAX_STICKY_ENTRIES);
    let learn_rate = table_bound(reader, &mut s, kind, "learn_rate", u64::from(MAX_LEARN_RATE));
    let learn_burst = table_bound(reader, &mut s, kind, "learn_burst", u64::from(MAX_LEARN_RATE));
    s.finish(reader);
    let mut policy = StickyPolicy::new(kind?, &name?);
    policy.max_entries = max_entries.unwrap_or(Some(StickyPolicy::DEFAULT_MAX_ENTRIES))?;
    let rate = learn_rate.unwrap_or(Some(u64::from(StickyPolicy::DEFAULT_LEARN_RATE)))?;
    // The burst defaults to one second's worth of the rate.
    let burst = learn_burst.unwrap_or(Some(rate))?;
    (policy.learn_rate, policy.learn_burst) = (u32::try_from(rate).ok()?, u32::try_from(burst).ok()?);
    policy.ttl = ttl.unwrap_or(Some(StickyPolicy::DEFAULT_TTL))?;
    policy.contract = contract.unwrap_or(Some(StickyContract::Async))?;
    policy.source_prefix_v4 = prefix_v4.unwrap_or(Some(32))?;
    policy.source_prefix_v6 = prefix_v6.unwrap_or(Some(128))?;
    policy.cookie = cookie;
    cookie_ok.then_some(policy)
}

/// A bound of the session table, 1 to `max`: `None` when absent, `Some(None)`
/// when wrong. `cookie` keeps no table, so there it is refused.
fn table_bound(
    reader: &mut Reader<'_>,
    s: &mut Section<'_, '_>,
    kind: Option<StickyKind>,
    key: &'static str,
    max: u64,
) -> Option<Option<u64>> {
    let field = s.optional(key)?;
    if kind == Some(StickyKind::Cookie) {
        reader.field_error(
            &field,
            format!("\"{key}\" does not apply to kind = \"cookie\" (its sessions live in the cookie, not in a table)"),
        );
        return Some(None);
    }
    Some(reader.uint(&field, 1, max))
}
