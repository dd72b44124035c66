//! The `[[certificate]]` sections of the file: PEM files a node stores in
//! the cluster at start.

use super::across;
use crate::reader::{Reader, Section};
use crate::spec::CertificateFile;

/// `[[certificate]]`: `name`, `cert` and `key` (paths of PEM files).
pub(super) fn certificate_file(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<CertificateFile> {
    let name = s.required(reader, "name").and_then(|f| {
        let name = reader.str(&f)?.to_string();
        across::name(reader, &f, &name);
        Some(name)
    });
    let cert = s
        .required(reader, "cert")
        .and_then(|f| reader.str(&f).map(str::to_string));
    let key = s
        .required(reader, "key")
        .and_then(|f| reader.str(&f).map(str::to_string));
    s.finish(reader);
    Some(CertificateFile {
        name: name?,
        cert: cert?,
        key: key?,
    })
}
