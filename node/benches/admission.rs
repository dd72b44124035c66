//! What admission costs a new connection: the ACL lookup alone with no
//! rule, 100 rules and 100 000 rules (networks of several prefix lengths,
//! IPv4 and IPv6, the client matching none, so every length is probed),
//! and a whole `admit` (ACL, source table, buckets) with the defaults,
//! with and without the 100 000 rules. Also how long building the 100 000-
//! rule table takes (once per ACL change, on every node).
//!
//! `cargo bench -p raftlb-node --bench admission`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use raftlb_config::{AclAction, AclRule, Cidr, ClientLimits};
use raftlb_node::dataplane::admission::{self, AclTable, ListenerGuard};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

/// `n` rules: /32 hosts, /24 and /16 networks and IPv6 /48s, denied, with
/// a few allowed exceptions; none covers 198.18.x.x (the benchmark's clients).
fn rules(n: usize) -> Vec<AclRule> {
    let rules = (0..n as u32).map(|i| {
        let (address, prefix): (IpAddr, u8) = match i % 4 {
            0 => (IpAddr::from((0x0A00_0000 | i).to_be_bytes()), 32),
            1 => (IpAddr::from((0x2000_0000 | (i << 8)).to_be_bytes()), 24),
            2 => (
                IpAddr::from((0x4000_0000 | ((i & 0xffff) << 16)).to_be_bytes()),
                16,
            ),
            _ => (
                IpAddr::from(std::net::Ipv6Addr::from(
                    (0x2001_0db8_u128 << 96) | (u128::from(i) << 80),
                )),
                48,
            ),
        };
        AclRule {
            network: Cidr::containing(address, prefix),
            action: if i % 97 == 0 {
                AclAction::Allow
            } else {
                AclAction::Deny
            },
        }
    });
    raftlb_config::acl::canonical(rules)
}

fn client(i: u32) -> IpAddr {
    IpAddr::from((0xC612_0000 | (i & 0xffff)).to_be_bytes())
}

fn acl(c: &mut Criterion) {
    let mut group = c.benchmark_group("acl_lookup");
    for n in [0usize, 100, 100_000] {
        let table = AclTable::build(&rules(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &table, |b, table| {
            let mut i = 0u32;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(table.allows(client(i)))
            })
        });
    }
    group.finish();
    let hundred_thousand = rules(100_000);
    c.bench_function("acl_build/100000", |b| {
        b.iter(|| black_box(AclTable::build(&hundred_thousand)))
    });
}

fn admit(c: &mut Criterion) {
    let mut group = c.benchmark_group("admit");
    let limits = ClientLimits {
        connection_rate: 0,
        ..ClientLimits::default()
    };
    for n in [0usize, 100_000] {
        let table = AclTable::build(&rules(n));
        let guard = Arc::new(ListenerGuard::default());
        group.bench_with_input(BenchmarkId::from_parameter(n), &table, |b, table| {
            let mut i = 0u32;
            b.iter(|| {
                i = i.wrapping_add(1);
                // Admitted and closed: the table entry's count goes up and down.
                let admitted = admission::admit(&guard, table, &limits, client(i), u64::from(i));
                black_box(admitted.is_ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, acl, admit);
criterion_main!(benches);
