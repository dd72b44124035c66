//! The `[gslb]` section: `bind`, `zone`, `ttl`, `unknown`, `ns`, `glue`,
//! `default_region`, `[gslb.soa]`, `[[gslb.regions]]` and
//! `[[gslb.names]]` with their `[[gslb.names.sites]]` (whose `check`
//! takes the keys of `[pool.health_check]` and a `port`).

use super::each;
use super::health::health_check;
use crate::acl::Cidr;
use crate::gslb::{GslbName, GslbSpec, NameServer, Policy, RegionRule, Site, SiteCheck, Soa, Unknown};
use crate::reader::{Field, Reader, Section};
use std::net::IpAddr;

const UNKNOWN: [(&str, Unknown); 2] = [("nxdomain", Unknown::NxDomain), ("refused", Unknown::Refused)];

/// `[gslb]`, or `None` after recording what is wrong.
pub(super) fn gslb(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<Box<GslbSpec>> {
    let mut s = reader.table(field)?;
    let bind = s.required(reader, "bind").and_then(|f| reader.socket_addr(&f));
    let zone = s.required(reader, "zone").and_then(|f| dns_name(reader, &f));
    let ttl = s.optional("ttl").map(|f| seconds(reader, &f));
    let unknown = s
        .optional("unknown")
        .map(|f| reader.choice(&f, "unknown", &UNKNOWN));
    let ns = s.required(reader, "ns").and_then(|f| {
        let items = reader.array(&f)?;
        items
            .iter()
            .map(|i| dns_name(reader, i))
            .collect::<Option<Vec<_>>>()
    });
    let glue = s.optional("glue").map(|f| {
        let entries = reader.entries(&f)?;
        let mut glue = Vec::new();
        for (name, value) in entries {
            glue.push((
                name.trim_end_matches('.').to_ascii_lowercase(),
                addresses(reader, &value)?,
            ));
        }
        Some(glue)
    });
    let default_region = s
        .optional("default_region")
        .map(|f| reader.str(&f).map(str::to_string));
    let soa = s.optional("soa");
    let regions = each(reader, s.optional("regions"), region);
    let names = each(reader, s.optional("names"), name);
    s.finish(reader);

    let zone = zone?;
    let ns = ns?;
    let soa = match soa {
        Some(f) => soa_section(reader, &f, &zone, &ns)?,
        None => default_soa(&zone, &ns),
    };
    let glue = glue.unwrap_or(Some(Vec::new()))?;
    let spec = GslbSpec {
        bind: bind?,
        ttl: ttl.unwrap_or(Some(GslbSpec::DEFAULT_TTL))?,
        unknown: unknown.unwrap_or(Some(Unknown::NxDomain))?,
        soa,
        ns: ns
            .into_iter()
            .map(|name| NameServer {
                addresses: glue
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default(),
                name,
            })
            .collect(),
        names: names.into_iter().collect::<Option<Vec<_>>>()?,
        regions: regions.into_iter().collect::<Option<Vec<_>>>()?,
        default_region: match default_region {
            Some(region) => Some(region?),
            None => None,
        },
        zone,
    };
    let checked = spec.check();
    reader.checked(field, Box::new(spec), checked)
}

fn default_soa(zone: &str, ns: &[String]) -> Soa {
    Soa {
        mname: ns.first().cloned().unwrap_or_else(|| zone.to_string()),
        rname: format!("hostmaster.{zone}"),
        refresh: 3600,
        retry: 600,
        expire: 86_400,
        minimum: GslbSpec::DEFAULT_TTL,
    }
}

/// `[gslb.soa]`: `mname`, `rname`, `refresh`, `retry`, `expire`, `minimum`.
fn soa_section(reader: &mut Reader<'_>, field: &Field<'_, '_>, zone: &str, ns: &[String]) -> Option<Soa> {
    let mut s = reader.table(field)?;
    let defaults = default_soa(zone, ns);
    let mname = s.optional("mname").map(|f| dns_name(reader, &f));
    let rname = s.optional("rname").map(|f| dns_name(reader, &f));
    let mut times = [
        defaults.refresh,
        defaults.retry,
        defaults.expire,
        defaults.minimum,
    ]
    .map(Some);
    for (i, key) in ["refresh", "retry", "expire", "minimum"].into_iter().enumerate() {
        if let Some(f) = s.optional(key) {
            times[i] = seconds(reader, &f);
        }
    }
    s.finish(reader);
    let [refresh, retry, expire, minimum] = times;
    Some(Soa {
        mname: mname.unwrap_or(Some(defaults.mname))?,
        rname: rname.unwrap_or(Some(defaults.rname))?,
        refresh: refresh?,
        retry: retry?,
        expire: expire?,
        minimum: minimum?,
    })
}

/// One `[[gslb.regions]]`: `cidr` and `region`.
fn region(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<RegionRule> {
    let cidr = s.required(reader, "cidr").and_then(|f| {
        let text = reader.str(&f)?;
        match text.parse::<Cidr>() {
            Ok(cidr) => Some(cidr),
            Err(why) => {
                reader.field_error(&f, format!("\"{text}\": {why}"));
                None
            }
        }
    });
    let region = s
        .required(reader, "region")
        .and_then(|f| reader.str(&f).map(str::to_string));
    s.finish(reader);
    Some(RegionRule {
        cidr: cidr?,
        region: region?,
    })
}

/// One `[[gslb.names]]`: `name`, `policy`, `ttl`, `sites`.
fn name(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<GslbName> {
    let name = s.required(reader, "name").and_then(|f| dns_name(reader, &f));
    let policy = s
        .optional("policy")
        .map(|f| reader.choice(&f, "policy", &Policy::ALL));
    let ttl = s.optional("ttl").map(|f| seconds(reader, &f));
    let sites_field = s.required(reader, "sites");
    let sites = each(reader, sites_field, site);
    s.finish(reader);
    Some(GslbName {
        name: name?,
        policy: policy.unwrap_or(Some(Policy::Failover))?,
        ttl: match ttl {
            Some(t) => Some(t?),
            None => None,
        },
        sites: sites.into_iter().collect::<Option<Vec<_>>>()?,
    })
}

/// One `[[gslb.names.sites]]`: `name`, `address`, `weight`, `region`, `check`.
fn site(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<Site> {
    let name = s
        .required(reader, "name")
        .and_then(|f| reader.str(&f).map(str::to_string));
    let addresses = s.required(reader, "address").and_then(|f| addresses(reader, &f));
    let weight = s.optional("weight").map(|f| {
        reader
            .uint(&f, 1, crate::gslb::MAX_SITE_WEIGHT.into())
            .map(|n| n as u32)
    });
    let region = s.optional("region").map(|f| reader.str(&f).map(str::to_string));
    let check = s.optional("check").map(|f| {
        let mut section = reader.table(&f)?;
        let port = section
            .required(reader, "port")
            .and_then(|p| reader.uint(&p, 1, u16::MAX.into()).map(|n| n as u16));
        let check = health_check(reader, section);
        Some(SiteCheck {
            port: port?,
            check: check?,
        })
    });
    s.finish(reader);
    Some(Site {
        name: name?,
        addresses: addresses?,
        weight: weight.unwrap_or(Some(1))?,
        region: match region {
            Some(r) => Some(r?),
            None => None,
        },
        check: match check {
            Some(c) => Some(c?),
            None => None,
        },
    })
}

/// An IP address or an array of them.
fn addresses(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<Vec<IpAddr>> {
    let texts: Vec<(String, Field<'_, '_>)> = match reader.str_or_array(field)? {
        Ok(one) => vec![(one, field.clone())],
        Err(items) => {
            let mut texts = Vec::new();
            for item in items {
                texts.push((reader.str(&item)?.to_string(), item));
            }
            texts
        }
    };
    let mut out = Vec::new();
    for (text, f) in texts {
        match text.parse::<IpAddr>() {
            Ok(ip) => out.push(ip),
            Err(_) => {
                reader.field_error(&f, format!("\"{text}\" is not an IP address"));
                return None;
            }
        }
    }
    Some(out)
}

/// A DNS name, lowercased, the final dot dropped.
fn dns_name(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<String> {
    let text = reader.str(field)?;
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let checked = crate::gslb::dns_name(&name);
    reader.checked(field, name, checked)
}

/// A duration in whole seconds (`"5s"`), at most a day.
fn seconds(reader: &mut Reader<'_>, field: &Field<'_, '_>) -> Option<u32> {
    let duration = reader.duration(field)?;
    let secs = u32::try_from(duration.as_secs()).unwrap_or(u32::MAX);
    let checked = match secs <= crate::gslb::MAX_TTL && duration.subsec_nanos() == 0 {
        true => Ok(()),
        false => Err(format!(
            "{duration:?}: whole seconds, at most {} s",
            crate::gslb::MAX_TTL
        )),
    };
    reader.checked(field, secs, checked)
}
