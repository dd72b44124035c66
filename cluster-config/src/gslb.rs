//! GSLB: the names a cluster answers DNS for, their sites, and the site
//! verdicts the leader commits (format 6). Which site a query gets is a
//! pure function here ([`GslbSpec::answer`]) of the spec, the committed
//! [`SiteVerdicts`], the client's region and a seed, so every node answers
//! from the same inputs; the DNS wire format is the node's.

use crate::acl::Cidr;
use crate::health::HealthCheck;
use crate::validate::shown;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Most names one `[gslb]` answers for.
pub const MAX_NAMES: usize = 1024;
/// Most sites one name has.
pub const MAX_SITES: usize = 16;
/// Most addresses one site answers with.
pub const MAX_SITE_ADDRESSES: usize = 8;
/// Most `[[gslb.regions]]` rules.
pub const MAX_REGIONS: usize = 65_536;
/// Most name servers (`ns`).
pub const MAX_NS: usize = 8;
/// Highest TTL, in seconds (a day).
pub const MAX_TTL: u32 = 86_400;
/// Highest site weight.
pub const MAX_SITE_WEIGHT: u32 = 1000;

/// `[gslb]`: an authoritative zone answered by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GslbSpec {
    /// UDP and TCP address of the DNS server (a wildcard IP takes the
    /// node's `bind_ip`, as listeners' binds do).
    pub bind: SocketAddr,
    /// The apex, lowercase, without the final dot.
    pub zone: String,
    /// Answers' TTL in seconds, unless a name says otherwise.
    pub ttl: u32,
    /// What a query for a name inside the zone that is not configured gets.
    pub unknown: Unknown,
    pub soa: Soa,
    /// The zone's name servers, with optional glue addresses.
    pub ns: Vec<NameServer>,
    pub names: Vec<GslbName>,
    /// Client subnet → region; the longest prefix wins.
    pub regions: Vec<RegionRule>,
    /// The region of a client no rule matches.
    pub default_region: Option<String>,
}

/// The answer to a name inside the zone that is not configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unknown {
    NxDomain,
    Refused,
}

/// The SOA record's fields; the serial is derived from the committed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Soa {
    pub mname: String,
    /// The responsible mailbox as a name (`hostmaster.example.com`).
    pub rname: String,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL (RFC 2308).
    pub minimum: u32,
}

/// One `ns` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameServer {
    pub name: String,
    /// Glue, answered when the server's name is inside the zone.
    pub addresses: Vec<IpAddr>,
}

/// One `[[gslb.names]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GslbName {
    /// Fully qualified, lowercase, without the final dot; inside the zone.
    pub name: String,
    pub policy: Policy,
    pub ttl: Option<u32>,
    pub sites: Vec<Site>,
}

/// How a name picks among its healthy sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Policy {
    /// The first healthy site in order.
    Failover,
    /// A healthy site at random, in proportion to the weights.
    Weighted,
    /// The first healthy site of the client's region, else failover.
    Geo,
    /// The healthy site with the least reported load (ties: order).
    LeastLoaded,
}

impl Policy {
    pub const ALL: [(&'static str, Policy); 4] = [
        ("failover", Policy::Failover),
        ("weighted", Policy::Weighted),
        ("geo", Policy::Geo),
        ("least_loaded", Policy::LeastLoaded),
    ];

    pub fn name(self) -> &'static str {
        Policy::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }
}

/// One `[[gslb.names.sites]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub name: String,
    /// What the site is answered with: v4 as A, v6 as AAAA.
    pub addresses: Vec<IpAddr>,
    pub weight: u32,
    pub region: Option<String>,
    pub check: Option<SiteCheck>,
}

/// A site's check: the pool checks' probe, on the site's first address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteCheck {
    pub port: u16,
    pub check: HealthCheck,
}

/// One `[[gslb.regions]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRule {
    pub cidr: Cidr,
    pub region: String,
}

/// The leader's last committed verdict on a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteVerdict {
    pub up: bool,
    /// The load the site last reported (`X-Raftlb-Load`), 0 if none.
    pub load: u32,
}

/// Verdicts by name, then site (a site without one counts as up), and the
/// zone's SOA serial: one more at every change of `[gslb]` or a verdict,
/// so every node serves the same serial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteVerdicts {
    pub serial: u32,
    pub sites: BTreeMap<String, BTreeMap<String, SiteVerdict>>,
}

impl SiteVerdicts {
    pub fn get(&self, name: &str, site: &str) -> Option<SiteVerdict> {
        self.sites.get(name).and_then(|sites| sites.get(site)).copied()
    }

    pub fn set(&mut self, name: &str, site: &str, verdict: SiteVerdict) {
        self.sites
            .entry(name.to_string())
            .or_default()
            .insert(site.to_string(), verdict);
        self.serial = self.serial.wrapping_add(1);
    }

    /// Drops the verdicts on sites `spec` no longer has.
    pub fn retain_in(&mut self, spec: Option<&GslbSpec>) {
        self.sites.retain(|name, sites| {
            let Some(n) = spec.and_then(|s| s.name(name)) else {
                return false;
            };
            sites.retain(|site, _| n.sites.iter().any(|s| &s.name == site));
            !sites.is_empty()
        });
    }
}

/// Which site answers, and why that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index into the name's sites.
    pub site: usize,
    /// Whether the client's region decided it (geo): the DNS answer then
    /// carries the ECS scope.
    pub by_region: bool,
    /// No site was healthy: the policy ran over all of them (fail open).
    pub fail_open: bool,
}

impl GslbSpec {
    pub const DEFAULT_TTL: u32 = 5;

    pub fn name(&self, name: &str) -> Option<&GslbName> {
        self.names.iter().find(|n| n.name == name)
    }

    /// Whether `name` (lowercase, no final dot) is the apex or below it.
    pub fn in_zone(&self, name: &str) -> bool {
        name == self.zone
            || (name.len() > self.zone.len()
                && name.ends_with(&self.zone)
                && name.as_bytes()[name.len() - self.zone.len() - 1] == b'.')
    }

    /// The region of a client address: the longest matching prefix, else
    /// the default region; with the prefix length that decided it.
    pub fn region_of(&self, client: IpAddr) -> (Option<&str>, u8) {
        self.regions
            .iter()
            .filter(|r| r.cidr.contains(client))
            .max_by_key(|r| r.cidr.prefix())
            .map_or((self.default_region.as_deref(), 0), |r| {
                (Some(r.region.as_str()), r.cidr.prefix())
            })
    }

    /// The site `name` answers with for a client of `region`. `seed` picks
    /// among weighted sites (a random number per query). `None` only for a
    /// name without sites, which the checks refuse.
    pub fn answer(
        &self,
        name: &GslbName,
        verdicts: &SiteVerdicts,
        region: Option<&str>,
        seed: u64,
    ) -> Option<Choice> {
        let verdict = |site: &Site| verdicts.get(&name.name, &site.name);
        let healthy: Vec<usize> = (0..name.sites.len())
            .filter(|&i| verdict(&name.sites[i]).is_none_or(|v| v.up))
            .collect();
        let fail_open = healthy.is_empty();
        let candidates: Vec<usize> = match fail_open {
            true => (0..name.sites.len()).collect(),
            false => healthy,
        };
        let first = *candidates.first()?;
        let choose = |site, by_region| Choice {
            site,
            by_region,
            fail_open,
        };
        Some(match name.policy {
            Policy::Failover => choose(first, false),
            Policy::Geo => {
                let local = candidates
                    .iter()
                    .copied()
                    .find(|&i| region.is_some() && name.sites[i].region.as_deref() == region);
                match local {
                    Some(i) => choose(i, true),
                    None => choose(first, false),
                }
            }
            Policy::LeastLoaded => {
                let load = |i: usize| verdict(&name.sites[i]).map_or(0, |v| v.load);
                let best = candidates.iter().copied().min_by_key(|&i| (load(i), i));
                choose(best.unwrap_or(first), false)
            }
            Policy::Weighted => {
                let total: u64 = candidates.iter().map(|&i| u64::from(name.sites[i].weight)).sum();
                let mut point = seed % total.max(1);
                let mut picked = first;
                for &i in &candidates {
                    let weight = u64::from(name.sites[i].weight);
                    if point < weight {
                        picked = i;
                        break;
                    }
                    point -= weight;
                }
                choose(picked, false)
            }
        })
    }

    /// The oldest format that can carry a `[gslb]` section.
    pub const FORMAT: u16 = 6;

    /// Every value within bounds, names well formed and inside the zone,
    /// names and sites unique.
    pub fn check(&self) -> Result<(), String> {
        dns_name(&self.zone).map_err(|why| format!("zone: {why}"))?;
        ttl("ttl", self.ttl)?;
        dns_name(&self.soa.mname).map_err(|why| format!("soa mname: {why}"))?;
        dns_name(&self.soa.rname).map_err(|why| format!("soa rname: {why}"))?;
        if self.ns.is_empty() || self.ns.len() > MAX_NS {
            return Err(format!("ns: 1 to {MAX_NS} name servers, not {}", self.ns.len()));
        }
        for ns in &self.ns {
            dns_name(&ns.name).map_err(|why| format!("ns: {why}"))?;
            if ns.addresses.len() > MAX_SITE_ADDRESSES {
                return Err(format!(
                    "ns \"{}\": at most {MAX_SITE_ADDRESSES} addresses",
                    ns.name
                ));
            }
        }
        if self.names.len() > MAX_NAMES {
            return Err(format!(
                "[gslb] has {} names, more than {MAX_NAMES}",
                self.names.len()
            ));
        }
        if self.regions.len() > MAX_REGIONS {
            return Err(format!(
                "[gslb] has {} regions, more than {MAX_REGIONS}",
                self.regions.len()
            ));
        }
        for r in &self.regions {
            crate::validate::name(&r.region).map_err(|why| format!("region of {}: {why}", r.cidr))?;
        }
        if let Some(region) = &self.default_region {
            crate::validate::name(region).map_err(|why| format!("default_region: {why}"))?;
        }
        let mut seen = HashSet::new();
        for name in &self.names {
            let label = shown(&name.name);
            dns_name(&name.name).map_err(|why| format!("name \"{label}\": {why}"))?;
            if !self.in_zone(&name.name) {
                return Err(format!(
                    "name \"{label}\" is not inside the zone \"{}\"",
                    self.zone
                ));
            }
            if !seen.insert(name.name.as_str()) {
                return Err(format!("duplicate name \"{label}\""));
            }
            if let Some(t) = name.ttl {
                ttl("ttl", t).map_err(|why| format!("name \"{label}\": {why}"))?;
            }
            if name.sites.is_empty() || name.sites.len() > MAX_SITES {
                return Err(format!(
                    "name \"{label}\": 1 to {MAX_SITES} sites, not {}",
                    name.sites.len()
                ));
            }
            let mut sites = HashSet::new();
            for site in &name.sites {
                crate::validate::name(&site.name).map_err(|why| format!("name \"{label}\": site: {why}"))?;
                if !sites.insert(site.name.as_str()) {
                    return Err(format!("name \"{label}\": duplicate site \"{}\"", site.name));
                }
                if site.addresses.is_empty() || site.addresses.len() > MAX_SITE_ADDRESSES {
                    return Err(format!(
                        "name \"{label}\": site \"{}\": 1 to {MAX_SITE_ADDRESSES} addresses",
                        site.name
                    ));
                }
                if !(1..=MAX_SITE_WEIGHT).contains(&site.weight) {
                    return Err(format!(
                        "name \"{label}\": site \"{}\": weight {} is not within 1 to {MAX_SITE_WEIGHT}",
                        site.name, site.weight
                    ));
                }
                if let Some(check) = &site.check
                    && (check.port == 0 || check.check.timeout > check.check.interval)
                {
                    return Err(format!(
                        "name \"{label}\": site \"{}\": the check needs a port and a timeout within its interval",
                        site.name
                    ));
                }
            }
        }
        Ok(())
    }
}

fn ttl(key: &str, value: u32) -> Result<(), String> {
    match value <= MAX_TTL {
        true => Ok(()),
        false => Err(format!("{key} {value} is more than {MAX_TTL} seconds")),
    }
}

/// A lowercase DNS name without the final dot: labels of 1 to 63 letters,
/// digits, `-` and `_`, 253 characters in all.
pub fn dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("\"{}\" is not 1 to 253 characters", shown(name)));
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "\"{}\" is not a lowercase DNS name (labels of 1 to 63 of a-z, 0-9, - and _)",
                shown(name)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, last: u8, region: Option<&str>) -> Site {
        Site {
            name: name.into(),
            addresses: vec![IpAddr::from([198, 18, 0, last])],
            weight: 1,
            region: region.map(Into::into),
            check: None,
        }
    }

    fn spec(policy: Policy) -> GslbSpec {
        GslbSpec {
            bind: "127.0.0.1:53".parse().unwrap(),
            zone: "gslb.test".into(),
            ttl: 5,
            unknown: Unknown::NxDomain,
            soa: Soa {
                mname: "ns1.gslb.test".into(),
                rname: "hostmaster.gslb.test".into(),
                refresh: 60,
                retry: 30,
                expire: 600,
                minimum: 5,
            },
            ns: vec![NameServer {
                name: "ns1.gslb.test".into(),
                addresses: vec![],
            }],
            names: vec![GslbName {
                name: "www.gslb.test".into(),
                policy,
                ttl: None,
                sites: vec![
                    site("a", 1, Some("eu")),
                    site("b", 2, Some("us")),
                    site("c", 3, None),
                ],
            }],
            regions: vec![
                RegionRule {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    region: "eu".into(),
                },
                RegionRule {
                    cidr: "10.1.0.0/16".parse().unwrap(),
                    region: "us".into(),
                },
            ],
            default_region: Some("eu".into()),
        }
    }

    fn down(verdicts: &mut SiteVerdicts, site: &str) {
        verdicts.set("www.gslb.test", site, SiteVerdict { up: false, load: 0 });
    }

    #[test]
    fn failover_takes_the_first_healthy_site_and_fails_open() {
        let spec = spec(Policy::Failover);
        let name = &spec.names[0];
        let mut v = SiteVerdicts::default();
        assert_eq!(spec.answer(name, &v, None, 0).unwrap().site, 0);
        down(&mut v, "a");
        assert_eq!(spec.answer(name, &v, None, 0).unwrap().site, 1);
        down(&mut v, "b");
        down(&mut v, "c");
        let all_down = spec.answer(name, &v, None, 0).unwrap();
        assert_eq!((all_down.site, all_down.fail_open), (0, true));
    }

    #[test]
    fn regions_match_the_longest_prefix_then_the_default() {
        let spec = spec(Policy::Geo);
        assert_eq!(spec.region_of("10.1.2.3".parse().unwrap()), (Some("us"), 16));
        assert_eq!(spec.region_of("10.2.2.3".parse().unwrap()), (Some("eu"), 8));
        assert_eq!(spec.region_of("192.0.2.1".parse().unwrap()), (Some("eu"), 0));
        let name = &spec.names[0];
        let mut v = SiteVerdicts::default();
        let us = spec.answer(name, &v, Some("us"), 0).unwrap();
        assert_eq!((us.site, us.by_region), (1, true));
        down(&mut v, "b");
        let us = spec.answer(name, &v, Some("us"), 0).unwrap();
        assert_eq!((us.site, us.by_region), (0, false));
        assert_eq!(spec.answer(name, &v, Some("asia"), 0).unwrap().site, 0);
    }

    #[test]
    fn weighted_follows_weights_over_healthy_sites() {
        let mut spec = spec(Policy::Weighted);
        spec.names[0].sites[0].weight = 3;
        let name = spec.names[0].clone();
        let v = SiteVerdicts::default();
        let picks: Vec<usize> = (0..5)
            .map(|seed| spec.answer(&name, &v, None, seed).unwrap().site)
            .collect();
        assert_eq!(picks, [0, 0, 0, 1, 2]);
        let mut v = v;
        down(&mut v, "a");
        assert!((0..10).all(|seed| spec.answer(&name, &v, None, seed).unwrap().site != 0));
    }

    #[test]
    fn least_loaded_takes_the_lowest_report() {
        let spec = spec(Policy::LeastLoaded);
        let name = &spec.names[0];
        let mut v = SiteVerdicts::default();
        v.set("www.gslb.test", "a", SiteVerdict { up: true, load: 9 });
        v.set("www.gslb.test", "b", SiteVerdict { up: true, load: 2 });
        v.set("www.gslb.test", "c", SiteVerdict { up: false, load: 0 });
        assert_eq!(spec.answer(name, &v, None, 0).unwrap().site, 1);
    }

    #[test]
    fn checks_refuse_names_outside_the_zone_and_bad_labels() {
        let mut bad = spec(Policy::Failover);
        bad.names[0].name = "www.other.test".into();
        assert!(bad.check().unwrap_err().contains("not inside the zone"));
        let mut bad = spec(Policy::Failover);
        bad.zone = "Gslb.test".into();
        assert!(bad.check().unwrap_err().contains("lowercase"));
        assert!(spec(Policy::Failover).check().is_ok());
        assert!(spec(Policy::Failover).in_zone("a.b.gslb.test"));
        assert!(!spec(Policy::Failover).in_zone("xgslb.test"));
    }

    #[test]
    fn verdicts_of_removed_sites_are_dropped() {
        let spec = spec(Policy::Failover);
        let mut v = SiteVerdicts::default();
        down(&mut v, "a");
        v.set("gone.gslb.test", "a", SiteVerdict { up: false, load: 0 });
        v.retain_in(Some(&spec));
        assert_eq!(v.sites.len(), 1);
        v.retain_in(None);
        assert!(v.sites.is_empty());
    }
}
