//! `[[certificate]]` files: read and checked when the node starts (a file
//! that cannot be served stops the node, naming the file and the reason),
//! then stored in the cluster under their names once it is bootstrapped —
//! unless the cluster already holds that name: a certificate changed with
//! `raftlb ctl cert add` is not overwritten by a restart.

use super::parse;
use crate::control::ControlPlane;
use raftlb_config::{Certificate, CertificateFile, Command};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Reads and checks every file; the error names the file and what is wrong.
pub fn read(files: &[CertificateFile]) -> Result<Vec<(String, Certificate)>, String> {
    files
        .iter()
        .map(|file| {
            let load = |path: &str| {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("certificate \"{}\": cannot read {path}: {e}", file.name))
            };
            let certificate = Certificate {
                chain_pem: load(&file.cert)?,
                key_pem: load(&file.key)?,
            };
            parse::parse(&certificate)
                .map_err(|e| format!("certificate \"{}\" ({}): {e}", file.name, file.cert))?;
            Ok((file.name.clone(), certificate))
        })
        .collect()
}

/// Stores the certificates the cluster lacks, once it is bootstrapped.
pub fn start(control: &ControlPlane, certificates: Vec<(String, Certificate)>) -> JoinHandle<()> {
    let mut applied = control.applied();
    let proposer = control.proposer();
    tokio::spawn(async move {
        let mut pending = certificates;
        while !pending.is_empty() {
            let state = Arc::clone(&applied.borrow_and_update());
            if state.state.is_bootstrapped() {
                pending.retain(|(name, _)| !state.state.certificates().contains_key(name));
                for (name, certificate) in &pending {
                    let command = Command::PutCertificate {
                        name: name.clone(),
                        certificate: certificate.clone(),
                    };
                    match proposer.propose(command).await {
                        Ok((index, outcome)) if outcome.is_applied() => {
                            tracing::info!(certificate = %name, index, "stored the certificate from the config file");
                        }
                        Ok((_, outcome)) => {
                            tracing::warn!(certificate = %name, reason = %outcome.rejection(), "certificate not stored")
                        }
                        Err(e) => {
                            tracing::debug!(certificate = %name, error = %e, "certificate not stored yet")
                        }
                    }
                }
            }
            // Whatever is still missing is tried again after the next change.
            let _ = tokio::time::timeout(Duration::from_millis(500), applied.changed()).await;
        }
    })
}
