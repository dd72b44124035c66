//! `raftlb ctl gslb status`: each GSLB name's policy, its sites with the
//! committed verdict and load, and the answer every node gives now (per
//! region for `geo`), computed from the replicated state with the same
//! function the DNS server answers with.

use super::format::table;
use raftlb_config::ClusterState;
use raftlb_config::gslb::{GslbSpec, Policy};
use serde::Serialize;
use std::net::IpAddr;

/// What `ctl gslb status` shows (and `--json` prints).
#[derive(Debug, Serialize)]
pub struct Status {
    pub zone: Option<String>,
    pub bind: Option<String>,
    /// The SOA serial.
    pub serial: u32,
    pub names: Vec<NameStatus>,
}

#[derive(Debug, Serialize)]
pub struct NameStatus {
    pub name: String,
    pub policy: &'static str,
    pub ttl: u32,
    pub sites: Vec<SiteStatus>,
    /// The answer by client region (`*`: any region).
    pub answers: Vec<Answer>,
}

#[derive(Debug, Serialize)]
pub struct SiteStatus {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub region: Option<String>,
    pub weight: u32,
    /// `up`, `down`, or `unchecked` (no check, or no verdict yet: counts as up).
    pub health: &'static str,
    pub load: u32,
}

#[derive(Debug, Serialize)]
pub struct Answer {
    pub region: String,
    /// The site answered (for `weighted`: the first of the seeds' picks).
    pub site: String,
    pub addresses: Vec<IpAddr>,
    /// No site was up: the policy ran over all of them.
    pub fail_open: bool,
}

pub fn status(state: &ClusterState) -> Status {
    let verdicts = state.site_verdicts();
    let Some(spec) = state.spec().gslb.as_deref() else {
        return Status {
            zone: None,
            bind: None,
            serial: verdicts.serial,
            names: Vec::new(),
        };
    };
    let names = spec
        .names
        .iter()
        .map(|name| {
            let sites = name
                .sites
                .iter()
                .map(|site| {
                    let verdict = verdicts.get(&name.name, &site.name);
                    SiteStatus {
                        name: site.name.clone(),
                        addresses: site.addresses.clone(),
                        region: site.region.clone(),
                        weight: site.weight,
                        health: match verdict {
                            Some(v) if v.up => "up",
                            Some(_) => "down",
                            None => "unchecked",
                        },
                        load: verdict.map_or(0, |v| v.load),
                    }
                })
                .collect();
            let regions: Vec<Option<&str>> = match name.policy {
                Policy::Geo => regions(spec),
                _ => vec![None],
            };
            let answers = regions
                .into_iter()
                .filter_map(|region| {
                    let choice = spec.answer(name, verdicts, region, 0)?;
                    let site = &name.sites[choice.site];
                    Some(Answer {
                        region: region.unwrap_or("*").to_string(),
                        site: site.name.clone(),
                        addresses: site.addresses.clone(),
                        fail_open: choice.fail_open,
                    })
                })
                .collect();
            NameStatus {
                name: name.name.clone(),
                policy: name.policy.name(),
                ttl: name.ttl.unwrap_or(spec.ttl),
                sites,
                answers,
            }
        })
        .collect();
    Status {
        zone: Some(spec.zone.clone()),
        bind: Some(spec.bind.to_string()),
        serial: verdicts.serial,
        names,
    }
}

/// Every region a rule, the default or a site names, once, sorted.
fn regions(spec: &GslbSpec) -> Vec<Option<&str>> {
    let mut all: Vec<&str> = spec.regions.iter().map(|r| r.region.as_str()).collect();
    all.extend(spec.default_region.as_deref());
    all.extend(
        spec.names
            .iter()
            .flat_map(|n| &n.sites)
            .filter_map(|s| s.region.as_deref()),
    );
    all.sort_unstable();
    all.dedup();
    all.into_iter().map(Some).collect()
}

pub fn format(status: &Status) -> String {
    let Some(zone) = &status.zone else {
        return "no [gslb] section: this cluster answers no DNS\n".to_string();
    };
    let mut out = format!(
        "zone {zone} on {} (serial {})\n",
        status.bind.as_deref().unwrap_or("?"),
        status.serial
    );
    let mut rows = Vec::new();
    for name in &status.names {
        for site in &name.sites {
            let answered: Vec<&str> = name
                .answers
                .iter()
                .filter(|a| a.site == site.name)
                .map(|a| a.region.as_str())
                .collect();
            rows.push(vec![
                name.name.clone(),
                name.policy.to_string(),
                site.name.clone(),
                join(&site.addresses),
                site.region.clone().unwrap_or_else(|| "-".into()),
                site.health.to_string(),
                site.load.to_string(),
                match answered.as_slice() {
                    [] => "-".to_string(),
                    regions => format!("answer ({})", regions.join(",")),
                },
            ]);
        }
    }
    out.push_str(&table(
        &[
            "NAME",
            "POLICY",
            "SITE",
            "ADDRESSES",
            "REGION",
            "HEALTH",
            "LOAD",
            "ANSWERED",
        ],
        &rows,
    ));
    out
}

fn join(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
