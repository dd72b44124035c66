//! C3, one VIP owner: no two hosts answered ARP for the VIP at the same
//! instant (the prober's replies on the client's segment, one monotonic
//! clock), and every request through the VIP that was answered was
//! forwarded (the backend logs by whom) by the host that owned the VIP when
//! the client's connection was made — so no host without the lease took a
//! connection for the VIP. (A connection made with the owner may be served
//! after it lost the VIP, as a draining balancer does: say, one accepted
//! by its kernel just before it was frozen.) The owner at an instant is the
//! host whose run of ARP replies began last before it (a prober that
//! stalls leaves gaps between one host's runs, and the owner stays the
//! same); [`SLACK`] absorbs the prober's period and a connection made with
//! the old owner just before its successor's first reply.

use super::Check;
use std::time::Duration;

/// How far a forwarded request may be from its forwarder's ownership.
pub const SLACK: Duration = Duration::from_millis(100);
/// At most this many requests are listed as evidence.
const EVIDENCE: usize = 5;

/// A run of ARP replies from one balancer (`None`: a MAC of no balancer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub balancer: Option<usize>,
    pub from_ns: u64,
    pub to_ns: u64,
}

/// An answered request: which balancer forwarded it, as its backend logged
/// it (`None`: an address of no balancer), and when the client's
/// connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    pub id: u64,
    pub balancer: Option<usize>,
    pub at_ns: u64,
}

fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

fn host(balancer: Option<usize>) -> String {
    balancer.map_or("a host that is no balancer".to_string(), |b| {
        format!("lb{}", b + 1)
    })
}

/// C3 from the claims and the forwarded requests.
pub fn check(claims: &[Claim], forwarded: &[Forwarded]) -> Check {
    let mut overlaps = Vec::new();
    let mut overlap_ns = 0u64;
    for (i, a) in claims.iter().enumerate() {
        for b in &claims[i + 1..] {
            let (from, to) = (a.from_ns.max(b.from_ns), a.to_ns.min(b.to_ns));
            if a.balancer != b.balancer && to > from {
                overlap_ns += to - from;
                overlaps.push(format!(
                    "{} and {} both answered ARP from {} to {}",
                    host(a.balancer),
                    host(b.balancer),
                    seconds(from),
                    seconds(to)
                ));
            }
        }
    }
    let slack = u64::try_from(SLACK.as_nanos()).unwrap_or(u64::MAX);
    let owns = |f: &Forwarded| {
        let latest = claims
            .iter()
            .filter(|c| c.from_ns <= f.at_ns)
            .max_by_key(|c| c.from_ns);
        let still_answering = claims.iter().any(|c| {
            c.balancer == f.balancer
                && c.from_ns <= f.at_ns.saturating_add(slack)
                && f.at_ns <= c.to_ns.saturating_add(slack)
        });
        f.balancer.is_some() && (latest.is_some_and(|c| c.balancer == f.balancer) || still_answering)
    };
    let strays: Vec<&Forwarded> = forwarded.iter().filter(|f| !owns(f)).collect();
    let figures = format!(
        "overlap {:?} over {} claims; {} answered requests, {} forwarded by a host not owning the VIP",
        Duration::from_nanos(overlap_ns),
        claims.len(),
        forwarded.len(),
        strays.len()
    );
    let mut evidence: Vec<String> = overlaps.into_iter().take(EVIDENCE).collect();
    evidence.extend(strays.iter().take(EVIDENCE).map(|f| {
        format!(
            "request {} went through {}, which did not own the VIP when its connection was made at {}",
            f.id,
            host(f.balancer),
            seconds(f.at_ns)
        )
    }));
    Check::judged("C3 one VIP owner", evidence, figures, !claims.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Verdict;

    const MS: u64 = 1_000_000;

    fn claim(balancer: usize, from_ms: u64, to_ms: u64) -> Claim {
        Claim {
            balancer: Some(balancer),
            from_ns: from_ms * MS,
            to_ns: to_ms * MS,
        }
    }

    fn forwarded(id: u64, balancer: usize, at_ms: u64) -> Forwarded {
        Forwarded {
            id,
            balancer: Some(balancer),
            at_ns: at_ms * MS,
        }
    }

    #[test]
    fn a_handover_with_requests_through_each_owner_is_valid() {
        let claims = [claim(0, 0, 1_000), claim(1, 1_500, 3_000)];
        let requests = [
            forwarded(1, 0, 500),
            forwarded(2, 0, 1_050),
            forwarded(3, 1, 2_000),
        ];
        let check = check(&claims, &requests);
        assert_eq!(check.verdict, Verdict::Valid, "{}", check.detail);
    }

    #[test]
    fn two_owners_at_once_are_a_violation_with_their_span() {
        let claims = [claim(0, 0, 1_000), claim(2, 800, 3_000)];
        let check = check(&claims, &[]);
        assert_eq!(check.verdict, Verdict::Violation);
        assert!(
            check
                .detail
                .starts_with("lb1 and lb3 both answered ARP from 0.800s to 1.000s"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_request_served_by_a_former_owner_is_a_violation() {
        let claims = [claim(0, 0, 1_000), claim(1, 1_500, 3_000)];
        let check = check(&claims, &[forwarded(9, 0, 1_700)]);
        assert_eq!(check.verdict, Verdict::Violation);
        let expected =
            "request 9 went through lb1, which did not own the VIP when its connection was made at 1.700s";
        assert!(check.detail.starts_with(expected), "{}", check.detail);
        // In the gap before its successor's first reply it still owns it.
        assert_eq!(
            super::check(&claims, &[forwarded(9, 0, 1_400)]).verdict,
            Verdict::Valid
        );
    }

    #[test]
    fn gaps_in_one_owners_replies_are_no_change_of_owner() {
        let claims = [claim(2, 0, 1_000), claim(2, 1_800, 3_000)];
        let check = check(&claims, &[forwarded(4, 2, 1_400)]);
        assert_eq!(check.verdict, Verdict::Valid, "{}", check.detail);
    }
}
