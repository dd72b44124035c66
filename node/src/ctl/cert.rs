//! `raftlb ctl cert add|list`: a certificate and key are read and checked
//! here, before anything is written (PEM readable, key matching, not
//! expired), so the cluster only ever stores what it can serve.

use crate::tls::parse;
use raftlb_config::{Certificate, ClusterState, Command};
use serde::Serialize;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a stored certificate is good for.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
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
        format!("valid for {}; {expiry}", self.names.join(", "))
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
    let parsed = parse::parse(&certificate).map_err(|e| format!("{}: {e}", cert.display()))?;
    if parsed.not_after <= now() {
        return Err(format!("{}: the certificate has expired", cert.display()));
    }
    let summary = Summary {
        name: name.to_string(),
        names: parsed.names,
        not_after: parsed.not_after,
        problem: None,
    };
    let command = Command::PutCertificate {
        name: name.to_string(),
        certificate,
    };
    Ok((command, summary))
}

/// Every stored certificate, described.
pub fn list(state: &ClusterState) -> Vec<Summary> {
    state
        .certificates()
        .iter()
        .map(|(name, certificate)| match parse::parse(certificate) {
            Ok(parsed) => Summary {
                name: name.clone(),
                names: parsed.names,
                not_after: parsed.not_after,
                problem: None,
            },
            Err(e) => Summary {
                name: name.clone(),
                names: Vec::new(),
                not_after: 0,
                problem: Some(e.to_string()),
            },
        })
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
