//! `raftlb certs`: the cluster's certificates, made by raftlb itself.
//!
//! ```text
//! raftlb certs init   --cluster ID --out DIR [--nodes 1,2,3] [--client admin]
//! raftlb certs node   --id 4 [--dir DIR]            # another node, later
//! raftlb certs client --name alice --role read [--dir DIR]
//! raftlb certs show   FILE...
//! ```
//!
//! `init` makes the CA (`ca.pem`, `ca.key`), one certificate and key per
//! node (`node-N.pem`, `node-N.key`) and one admin client (`client-admin`).
//! `node` and `client` sign with the CA in `--dir` (or `--ca-cert` and
//! `--ca-key`), so the CA key can stay offline between uses: nodes never
//! need it. Keys are written 0600, certificates 0644, each through a
//! temporary file renamed into place (a node watching its files never
//! reads half of one); an existing file is replaced only with `--force`.

use crate::pki::issue::{Authority, Issued, KeyType, Validity};
use crate::pki::material::{first_certificate, not_after, utc};
use crate::pki::{Identity, Role};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Make a new cluster CA, node certificates and an admin client certificate.
    Init {
        /// The cluster id (`[cluster] id`), bound into every certificate.
        #[arg(long)]
        cluster: String,
        /// Where to write the files (created 0700 if missing).
        #[arg(long)]
        out: PathBuf,
        /// Node ids to make certificates for, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        nodes: Vec<u64>,
        /// Name of the admin client certificate to make (role admin).
        #[arg(long, default_value = "admin")]
        client: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        ca_days: u32,
        /// If OUT already holds a CA, keep everything there and make
        /// nothing (a container's first start makes them, later ones keep them).
        #[arg(long)]
        keep_existing: bool,
        #[command(flatten)]
        leaf: LeafOptions,
    },
    /// Make a certificate for node ID, signed by the cluster CA.
    Node {
        /// The node's `[node] id`.
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        ca: CaOptions,
        #[command(flatten)]
        leaf: LeafOptions,
    },
    /// Make a client certificate for the admin API (`raftlb ctl`).
    Client {
        /// Who it is for: letters, digits, '_', '-', '.'.
        #[arg(long)]
        name: String,
        /// admin: every call; read: status, listeners, pools, cert list, sticky stats and get.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        ca: CaOptions,
        #[command(flatten)]
        leaf: LeafOptions,
    },
    /// Print who certificates speak for, their issuer, validity and fingerprint.
    Show {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Where the CA is, and where the new files go.
#[derive(Debug, clap::Args)]
pub struct CaOptions {
    /// The directory `init` wrote: its ca.pem and ca.key sign, and the new files go there.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The CA certificate [default: DIR/ca.pem].
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The CA key [default: DIR/ca.key].
    #[arg(long)]
    ca_key: Option<PathBuf>,
    /// Where to write the new files [default: DIR].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// How a new leaf certificate is made.
#[derive(Debug, clap::Args)]
pub struct LeafOptions {
    /// Key algorithm.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    key_type: KeyType,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// First valid day, YYYY-MM-DD (with --not-after, instead of --days).
    #[arg(long, value_parser = parse_day, requires = "not_after")]
    not_before: Option<time::OffsetDateTime>,
    /// Last valid day, YYYY-MM-DD.
    #[arg(long, value_parser = parse_day, requires = "not_before")]
    not_after: Option<time::OffsetDateTime>,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
}

impl LeafOptions {
    fn validity(&self) -> Validity {
        match (self.not_before, self.not_after) {
            (Some(not_before), Some(not_after)) => Validity {
                not_before,
                not_after,
            },
            _ => Validity::days(self.days),
        }
    }
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("unknown role \"{text}\" (valid: admin, read)"))
}

fn parse_day(text: &str) -> Result<time::OffsetDateTime, String> {
    let invalid = || format!("invalid date \"{text}\" (expected YYYY-MM-DD)");
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let (y, m, d) = (
        y.parse::<i32>().map_err(|_| invalid())?,
        m.parse::<u8>().map_err(|_| invalid())?,
        d.parse::<u8>().map_err(|_| invalid())?,
    );
    let month = time::Month::try_from(m).map_err(|_| invalid())?;
    let date = time::Date::from_calendar_date(y, month, d).map_err(|_| invalid())?;
    Ok(date.midnight().assume_utc())
}

/// Runs one `raftlb certs` subcommand; `Err` is the line to print.
pub fn run(command: CertsCommand) -> Result<(), String> {
    match command {
        CertsCommand::Init {
            cluster,
            out,
            nodes,
            client,
            ca_days,
            keep_existing,
            leaf,
        } => {
            create_dir(&out)?;
            if keep_existing && out.join("ca.pem").exists() {
                println!("{}: a CA is there already; nothing made", out.display());
                return Ok(());
            }
            for name in ["ca.pem", "ca.key"] {
                if out.join(name).exists() {
                    return Err(format!(
                        "{} exists: refusing to replace a CA (use `raftlb certs node` or `client` to add to it)",
                        out.join(name).display()
                    ));
                }
            }
            let ca = Authority::new(&cluster, leaf.key_type, Validity::days(ca_days))?;
            write(&out.join("ca.pem"), ca.cert_pem(), 0o644, false)?;
            write(&out.join("ca.key"), &ca.key_pem(), 0o600, false)?;
            for id in nodes {
                let issued = ca.node(id, leaf.key_type, leaf.validity())?;
                save(&out, &format!("node-{id}"), &issued, leaf.force)?;
            }
            let issued = ca.client(&client, Role::Admin, leaf.key_type, leaf.validity())?;
            save(&out, &format!("client-{client}"), &issued, leaf.force)?;
            println!(
                "\nOn node N, in its config file:\n  [cluster.tls]\n  ca_file = \"{dir}/ca.pem\"\n  \
                 cert_file = \"{dir}/node-N.pem\"\n  key_file = \"{dir}/node-N.key\"\n\
                 For raftlb ctl: --ca {dir}/ca.pem --cert {dir}/client-{client}.pem --key {dir}/client-{client}.key\n\
                 Keep {dir}/ca.key offline: nodes never need it; `raftlb certs node|client --dir DIR` does.",
                dir = out.display()
            );
            Ok(())
        }
        CertsCommand::Node { id, ca, leaf } => {
            let (authority, out) = ca.load()?;
            let issued = authority.node(id, leaf.key_type, leaf.validity())?;
            save(&out, &format!("node-{id}"), &issued, leaf.force)
        }
        CertsCommand::Client { name, role, ca, leaf } => {
            let (authority, out) = ca.load()?;
            let issued = authority.client(&name, role, leaf.key_type, leaf.validity())?;
            save(&out, &format!("client-{name}"), &issued, leaf.force)
        }
        CertsCommand::Show { files } => {
            for file in files {
                println!("{}", show(&file)?);
            }
            Ok(())
        }
    }
}

impl CaOptions {
    fn load(&self) -> Result<(Authority, PathBuf), String> {
        let cert = self.ca_cert.clone().unwrap_or_else(|| self.dir.join("ca.pem"));
        let key = self.ca_key.clone().unwrap_or_else(|| self.dir.join("ca.key"));
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let authority = Authority::load(&read(&cert)?, &read(&key)?)
            .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
        let out = self.out.clone().unwrap_or_else(|| self.dir.clone());
        create_dir(&out)?;
        Ok((authority, out))
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes `NAME.pem` and `NAME.key` in `dir`.
fn save(dir: &Path, name: &str, issued: &Issued, force: bool) -> Result<(), String> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    if !force && let Some(existing) = [&cert, &key].into_iter().find(|p| p.exists()) {
        return Err(format!("{} exists (--force replaces it)", existing.display()));
    }
    // The key first: a watcher that sees the new certificate finds its key.
    write(&key, &issued.key_pem, 0o600, force)?;
    write(&cert, &issued.cert_pem, 0o644, force)
}

/// Writes `text` to `path` with `mode`, through a temporary file renamed
/// into place.
fn write(path: &Path, text: &str, mode: u32, replace: bool) -> Result<(), String> {
    if !replace && path.exists() {
        return Err(format!("{} exists", path.display()));
    }
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temporary = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let failed = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(failed)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One line per certificate of `path`.
fn show(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let der = first_certificate(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let identity = Identity::of_certificate(&der)
        .map_or_else(|e| format!("no raftlb identity ({e})"), |i| i.to_string());
    let (_, x509) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    let expires = not_after(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!(
        "{}: {identity}; issuer \"{}\"; valid {} to {}; SHA-256 {}",
        path.display(),
        x509.issuer(),
        utc(x509.validity().not_before.timestamp()),
        utc(expires),
        fingerprint(&der)
    ))
}

/// SHA-256 of a DER certificate, as colon-separated hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
