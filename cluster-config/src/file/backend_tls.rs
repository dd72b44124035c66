//! The `[pool.tls]` section of the file: TLS from the balancer to a pool's backends.

use crate::reader::{Reader, Section};
use crate::spec::BackendTls;

/// `[pool.tls]`: `server_name`, `ca_file`, `insecure`.
pub(super) fn backend_tls(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<BackendTls> {
    let server_name = s
        .optional("server_name")
        .map(|f| reader.str(&f).map(str::to_string));
    let ca_file = s.optional("ca_file").map(|f| reader.str(&f).map(str::to_string));
    let insecure_field = s.optional("insecure");
    let insecure = insecure_field.as_ref().map(|f| reader.bool(f));
    let span = s.span();
    s.finish(reader);
    let tls = BackendTls {
        server_name: match server_name {
            Some(name) => Some(name?),
            None => None,
        },
        ca_file: match ca_file {
            Some(path) => Some(path?),
            None => None,
        },
        insecure: insecure.unwrap_or(Some(false))?,
    };
    match (&tls.ca_file, tls.insecure) {
        (None, false) => {
            reader.error(
                span,
                "pool.tls",
                "say how to check the backends' certificates: ca_file = \"/path/ca.pem\", or insecure = true",
            );
            None
        }
        (Some(_), true) => {
            if let Some(f) = &insecure_field {
                reader.field_error(f, "insecure = true ignores ca_file; keep one of the two");
            }
            None
        }
        _ => Some(tls),
    }
}
