//! A listener's sections about its clients: `[listener.limits]` (what one
//! source may do) and `[[listener.acl]]` (sources allowed or denied), and
//! the `upgrades` key of HTTP listeners.

use crate::acl::{self, AclAction, AclRule, Cidr};
use crate::client_limits::ClientLimits;
use crate::limits::{MAX_ACL_RULES, MAX_UPGRADES};
use crate::reader::{Field, Reader};

/// `[listener.limits]`: each key optional, defaults from
/// [`ClientLimits::default`]. A rate given without its burst gets a burst
/// of two seconds of it (the default burst would be below a high rate).
pub(super) fn limits(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<ClientLimits> {
    let mut s = reader.table(field)?;
    let mut limits = ClientLimits::default();
    let mut ok = true;
    let mut given = Vec::new();
    for key in ClientLimits::KEYS {
        let Some(f) = s.optional(key) else { continue };
        let (min, max) = ClientLimits::bounds(key)?;
        match reader.uint(&f, min, max) {
            Some(value) => {
                // Within the bounds just checked, so `set` cannot refuse it.
                ok &= limits.set(key, value).is_ok();
                given.push(key);
            }
            None => ok = false,
        }
    }
    for (rate, burst) in [
        ("connection_rate", "connection_burst"),
        ("request_rate", "request_burst"),
    ] {
        if given.contains(&rate) && !given.contains(&burst) {
            let doubled = u64::from(limits.get(rate)?).saturating_mul(2);
            let (_, max) = ClientLimits::bounds(burst)?;
            ok &= limits.set(burst, doubled.min(max)).is_ok();
        }
    }
    s.finish(reader);
    if let Err(why) = limits.check() {
        reader.field_error(field, why);
        return None;
    }
    ok.then_some(limits)
}

/// `[[listener.acl]]`: each table an `action` and its `sources`, the
/// networks it applies to. Returned in canonical order; a network listed
/// twice is an error naming both.
pub(super) fn acl(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<Vec<AclRule>> {
    let tables = reader.array(field)?;
    let mut rules: Vec<(AclRule, Field<'_, '_>)> = Vec::new();
    let mut ok = true;
    for table in &tables {
        let Some(mut s) = reader.table(table) else {
            ok = false;
            continue;
        };
        let action = s
            .required(reader, "action")
            .and_then(|f| reader.choice(&f, "acl action", &AclAction::ALL));
        let sources = s.required(reader, "sources").and_then(|f| reader.array(&f));
        s.finish(reader);
        let (Some(action), Some(sources)) = (action, sources) else {
            ok = false;
            continue;
        };
        for source in sources {
            let network = reader
                .str(&source)
                .and_then(|text| reader.checked(&source, text, text.parse::<Cidr>().map(drop)))
                .and_then(|text| text.parse::<Cidr>().ok());
            match network {
                Some(network) => rules.push((AclRule { network, action }, source)),
                None => ok = false,
            }
        }
    }
    if rules.len() > MAX_ACL_RULES {
        reader.field_error(field, format!("a listener has at most {MAX_ACL_RULES} ACL rules"));
        return None;
    }
    let mut seen = std::collections::HashMap::with_capacity(rules.len());
    for (rule, source) in &rules {
        if let Some(first) = seen.insert(rule.network, source.path.clone()) {
            reader.field_error(source, format!("{} is already listed at {first}", rule.network));
            ok = false;
        }
    }
    ok.then(|| acl::canonical(rules.into_iter().map(|(rule, _)| rule)))
}

/// `upgrades = ["websocket", …]`: the `Upgrade` protocols passed on.
pub(super) fn upgrades(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<Vec<String>> {
    let items = reader.array(field)?;
    if items.len() > MAX_UPGRADES {
        reader.field_error(
            field,
            format!("a listener passes on at most {MAX_UPGRADES} upgrade protocols"),
        );
        return None;
    }
    let mut protocols = Vec::with_capacity(items.len());
    for item in &items {
        let protocol = reader.str(item)?.to_ascii_lowercase();
        protocols.push(protocol);
    }
    Some(protocols)
}
