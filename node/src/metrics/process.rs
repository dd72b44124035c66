//! The process section of `/metrics`, under the names the Prometheus
//! client libraries use (`process_*`), read from `/proc/self`; and
//! `raftlb_build_info`, this binary's version and the newest format it
//! writes. A value `/proc` cannot give is left out, never made up.

use std::fmt::Write;

/// Clock ticks per second in `/proc/*/stat`: `USER_HZ`, 100 on every
/// Linux architecture (the kernel converts to it for user space).
const USER_HZ: f64 = 100.0;

/// Appends the process metrics and the build info to `out`.
pub(super) fn render(out: &mut String) {
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    };
    let stat = Stat::read();
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stat.as_ref().map(|s| (s.utime + s.stime) as f64 / USER_HZ),
    );
    metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stat.as_ref()
            .zip(boot_time())
            .map(|(s, boot)| boot as f64 + s.starttime as f64 / USER_HZ),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stat.as_ref().map(|s| s.vsize as f64),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        resident_bytes().map(|b| b as f64),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64),
    );
    metric(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map(|n| n as f64),
    );
    let _ = writeln!(
        out,
        "# HELP raftlb_build_info This binary: its version, and the newest data format it writes.\n\
         # TYPE raftlb_build_info gauge\n\
         raftlb_build_info{{version=\"{}\",format=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        raftlb_config::format::CURRENT
    );
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
}

impl Stat {
    fn read() -> Option<Stat> {
        Stat::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Fields after the command name (which may hold spaces and `)`), from
    /// field 3 (`state`): utime is field 14, stime 15, starttime 22, vsize 23.
    fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
        })
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// When the machine booted (Unix time): `btime` of `/proc/stat`.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped() {
        let line = "4242 (raft lb) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 987654321 5000 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 250,
                stime: 75,
                starttime: 123456,
                vsize: 987654321,
            })
        );
    }

    #[test]
    fn a_truncated_line_is_none() {
        assert_eq!(Stat::parse("4242 (raftlb) S 1 2 3"), None);
        assert_eq!(Stat::parse("no parenthesis"), None);
    }

    #[test]
    fn this_process_reads() {
        let mut out = String::new();
        render(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_start_time_seconds",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "raftlb_build_info",
        ] {
            assert!(out.contains(&format!("\n{name}")), "{name} missing in\n{out}");
        }
    }
}
