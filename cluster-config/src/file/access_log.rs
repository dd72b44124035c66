//! `[node] access_log = { format, path }`: how and where this node writes
//! its access log. Node-local: it is read at start and never replicated.

use crate::access_log::{AccessLogFormat, AccessLogSpec};
use crate::reader::{Reader, Section};

/// `format` (`"combined"`, the default, or `"json"`) and `path` (a file
/// opened for appending; `"-"` or none: stderr).
pub(super) fn access_log(reader: &mut Reader<'_>, mut s: Section<'_, '_>) -> Option<AccessLogSpec> {
    let format = match s.optional("format") {
        Some(f) => reader.choice(
            &f,
            "access log format",
            &[
                ("combined", AccessLogFormat::Combined),
                ("json", AccessLogFormat::Json),
            ],
        ),
        None => Some(AccessLogFormat::Combined),
    };
    let path = s.optional("path").map(|f| {
        let path = reader.str(&f)?;
        match path {
            "" => {
                reader.field_error(&f, "empty path (use \"-\" for stderr)");
                None
            }
            "-" => Some(None),
            path => Some(Some(path.to_string())),
        }
    });
    s.finish(reader);
    Some(AccessLogSpec {
        format: format?,
        path: match path {
            Some(parsed) => parsed?,
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::access_log::{AccessLogFormat, AccessLogSpec};
    use crate::parse;

    fn node(line: &str) -> Result<Option<AccessLogSpec>, String> {
        parse("lb.toml", &format!("[node]\nid = 1\n{line}\n"))
            .map(|c| c.node.access_log)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn formats_paths_and_defaults() {
        assert_eq!(node(""), Ok(None));
        assert_eq!(
            node("access_log = {}"),
            Ok(Some(AccessLogSpec {
                format: AccessLogFormat::Combined,
                path: None
            }))
        );
        assert_eq!(
            node(r#"access_log = { format = "json", path = "/var/log/raftlb/access.log" }"#),
            Ok(Some(AccessLogSpec {
                format: AccessLogFormat::Json,
                path: Some("/var/log/raftlb/access.log".to_string())
            }))
        );
        assert_eq!(
            node(r#"access_log = { path = "-" }"#).map(|s| s.and_then(|s| s.path)),
            Ok(None)
        );
    }

    #[test]
    fn mistakes_name_the_file_and_key() {
        let wrong_format = node(r#"access_log = { format = "clf" }"#).expect_err("unknown format");
        assert!(wrong_format.contains("lb.toml"), "{wrong_format}");
        assert!(wrong_format.contains("node.access_log.format"), "{wrong_format}");
        assert!(wrong_format.contains("\"combined\", \"json\""), "{wrong_format}");
        let empty = node(r#"access_log = { path = "" }"#).expect_err("empty path");
        assert!(empty.contains("node.access_log.path"), "{empty}");
        let unknown = node(r#"access_log = { file = "x" }"#).expect_err("unknown key");
        assert!(unknown.contains("file"), "{unknown}");
        let not_a_table = node(r#"access_log = "json""#).expect_err("not a table");
        assert!(not_a_table.contains("node.access_log"), "{not_a_table}");
    }
}
