//! `raftlb ctl cert add|list`: a certificate and key are read and checked
//! here, before anything is written (PEM readable, key matching, not
//! expired), so the cluster only ever stores what it can serve.

use crate::tls::parse;
use raftlb_config::{Certificate, ClusterState, Command};
use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a stored certificate is good for: names, expiry and fingerprint,
/// never its key (admin replies do not carry keys).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-256 of the leaf certificate.
    pub fingerprint: String,
    /// Why it cannot be served, for a stored one that no longer parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Summary {
    pub fn describe(&self) -> String {
        if let Some(problem) = &self.problem {
            return format!("NOT SERVED: {problem}");
        }
        let days = (self.not_after - now()) / 86_400;
        let expiry = if self.not_after <= now() {
            "EXPIRED".to_string()
        } else {
            format!("expires in {days} days")
        };
        format!(
            "valid for {}; {expiry}; SHA-256 {}",
            self.names.join(", "),
            self.fingerprint
        )
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

/// Reads and checks `cert` and `key`; the command that stores them as `name`.
pub fn add(name: &str, cert: &Path, key: &Path) -> Result<(Command, Summary), String> {
    let certificate = Certificate {
        chain_pem: read(cert, "certificate")?,
        key_pem: read(key, "key")?,
    };
    parse::parse(&certificate).map_err(|e| format!("{}: {e}", cert.display()))?;
    let described =
        parse::describe(&certificate.chain_pem).map_err(|e| format!("{}: {e}", cert.display()))?;
    if described.not_after <= now() {
        return Err(format!("{}: the certificate has expired", cert.display()));
    }
    let summary = Summary {
        name: name.to_string(),
        names: described.names,
        not_after: described.not_after,
        fingerprint: described.fingerprint,
        problem: None,
    };
    let command = Command::PutCertificate {
        name: name.to_string(),
        certificate,
    };
    Ok((command, summary))
}

/// Every stored certificate, described from its chain.
pub fn list(state: &ClusterState) -> Vec<Summary> {
    state
        .certificates()
        .iter()
        .map(
            |(name, certificate)| match parse::describe(&certificate.chain_pem) {
                Ok(described) => Summary {
                    name: name.clone(),
                    names: described.names,
                    not_after: described.not_after,
                    fingerprint: described.fingerprint,
                    problem: None,
                },
                Err(e) => Summary {
                    name: name.clone(),
                    names: Vec::new(),
                    not_after: 0,
                    fingerprint: String::new(),
                    problem: Some(e.to_string()),
                },
            },
        )
        .collect()
}

pub fn format_list(list: &[Summary]) -> String {
    if list.is_empty() {
        return "no certificates\n".to_string();
    }
    list.iter()
        .map(|s| format!("{}: {}\n", s.name, s.describe()))
        .collect()
}
