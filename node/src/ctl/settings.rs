//! Where `raftlb ctl` connects and who it is: `--node`, `--ca`, `--cert`
//! and `--key` (or `RAFTLB_NODE`, `RAFTLB_CA`, …), else the ctl config
//! file (`--ctl-config`, default `~/.config/raftlb/ctl.toml`), so that a
//! person does not type three paths for every command:
//!
//! ```toml
//! node = "10.0.0.1:7000"
//! ca = "pki/ca.pem"          # relative to this file
//! cert = "pki/client-alice.pem"
//! key = "pki/client-alice.key"
//! ```
//!
//! With a CA, certificate and key, every call is mutual TLS and the node
//! must present a node certificate of the same cluster as ours; with none
//! of them, the node must be a cleartext (loopback) cluster's.

use super::args::CtlArgs;
use crate::control::transport::{Dialer, Links};
use crate::pki::{Files, Keyring};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the ctl config lives unless `--ctl-config` says otherwise.
const DEFAULT_CONFIG: &str = ".config/raftlb/ctl.toml";
/// Where `--node` points unless told.
const DEFAULT_NODE: &str = "127.0.0.1:7000";

/// The ctl config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CtlFile {
    node: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// What one `raftlb ctl` run connects with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub dialer: Dialer,
    /// Whether calls are mutual TLS (for hints when they fail).
    pub tls: bool,
}

fn read_file(path: &Path) -> Result<CtlFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the ctl config {}: {e}", path.display()))?;
    let mut file: CtlFile =
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for entry in [&mut file.ca, &mut file.cert, &mut file.key]
        .into_iter()
        .flatten()
    {
        if entry.is_relative() {
            *entry = dir.join(&*entry);
        }
    }
    Ok(file)
}

impl Settings {
    pub fn from_args(args: &CtlArgs, connect_timeout: Duration) -> Result<Settings, String> {
        let file = match &args.ctl_config {
            Some(path) => read_file(path)?,
            None => match std::env::var_os("HOME").map(|home| PathBuf::from(home).join(DEFAULT_CONFIG)) {
                Some(path) if path.exists() => read_file(&path)?,
                _ => CtlFile::default(),
            },
        };
        let node = args
            .node
            .clone()
            .or(file.node)
            .unwrap_or_else(|| DEFAULT_NODE.to_string());
        let ca = args.tls_ca.clone().or(file.ca);
        let cert = args.tls_cert.clone().or(file.cert);
        let key = args.tls_key.clone().or(file.key);
        let links = match (ca, cert, key) {
            (None, None, None) => Links::Cleartext,
            (Some(ca), Some(cert), Some(key)) => {
                let keyring = Keyring::load(Files { ca, cert, key }).map_err(|e| e.to_string())?;
                Links::Tls(keyring)
            }
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    ("--ca", ca.is_none()),
                    ("--cert", cert.is_none()),
                    ("--key", key.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, missing)| missing.then_some(name))
                .collect();
                return Err(format!(
                    "{} missing: a TLS cluster needs the CA bundle, your certificate and its key \
                     (--ca, --cert, --key, or their RAFTLB_ variables, or a ctl config file)",
                    missing.join(" and ")
                ));
            }
        };
        let tls = matches!(links, Links::Tls(_));
        Ok(Settings {
            node,
            dialer: Dialer::new(links, connect_timeout),
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn settings(extra: &[&str]) -> Result<Settings, String> {
        let args = Cli::try_parse_from(["ctl"].iter().chain(extra).chain(&["status"]))
            .expect("valid arguments")
            .ctl;
        Settings::from_args(&args, Duration::from_secs(1))
    }

    #[test]
    fn the_ctl_config_gives_what_options_do_not() {
        let dir = std::env::temp_dir().join(format!("raftlb-ctl-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.toml");
        let file = path.to_str().unwrap();
        std::fs::write(&path, "node = \"10.0.0.9:7000\"\n").unwrap();
        let from_file = settings(&["--ctl-config", file]).expect("a node and no credentials");
        assert_eq!(from_file.node, "10.0.0.9:7000");
        assert!(!from_file.tls);
        let option_wins = settings(&["--ctl-config", file, "--node", "10.0.0.1:7000"]).unwrap();
        assert_eq!(option_wins.node, "10.0.0.1:7000");

        std::fs::write(&path, "node = \"10.0.0.9:7000\"\nca = \"pki/ca.pem\"\n").unwrap();
        let partial = settings(&["--ctl-config", file]).unwrap_err();
        assert!(partial.starts_with("--cert and --key missing"), "{partial}");
        std::fs::write(
            &path,
            "node = \"x\"\ncert = \"c\"\nkey = \"k\"\nca = \"pki/ca.pem\"\n",
        )
        .unwrap();
        let unreadable = settings(&["--ctl-config", file]).unwrap_err();
        assert!(
            unreadable.contains(&format!("{}", dir.join("pki/ca.pem").display())),
            "paths are relative to the file: {unreadable}"
        );
        std::fs::write(&path, "nodes = \"x\"\n").unwrap();
        let unknown = settings(&["--ctl-config", file]).unwrap_err();
        assert!(
            unknown.starts_with(file) && unknown.contains("nodes"),
            "{unknown}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
