//! What a pick costs, per algorithm, for pools of 10 and 100 backends (no
//! backend tried, every one available, a few requests in flight), and how
//! long Maglev takes to build its table for 1 000 backends.
//!
//! `cargo bench -p raftlb-node --bench balance`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use raftlb_config::{Algorithm, BackendSpec};
use raftlb_node::backend::{ActiveGuard, Backend};
use raftlb_node::balance::{self, Maglev, Pick};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn specs(n: usize) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| {
            let address = ([10, 0, (i >> 8) as u8, i as u8], 8080).into();
            BackendSpec {
                weight: 1 + (i % 3) as u32,
                ..BackendSpec::new(address)
            }
        })
        .collect()
}

/// Live backends for `specs`, some busy, each with a latency sample.
fn live(specs: &[BackendSpec]) -> (Vec<Arc<Backend>>, Vec<ActiveGuard>) {
    let backends: Vec<Arc<Backend>> = specs.iter().map(|b| Arc::new(Backend::new(b.address))).collect();
    let mut guards = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        guards.extend((0..i % 4).filter_map(|_| b.try_track()));
        b.latency()
            .record(Duration::from_micros(200 + 37 * (i as u64 % 11)));
    }
    (backends, guards)
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [10, 100] {
        let specs = specs(n);
        let (backends, _guards) = live(&specs);
        for (name, algorithm) in Algorithm::ALL {
            let balancer = balance::build(algorithm, &specs);
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let pick = Pick {
                        tried: &[],
                        hash: Some(key),
                    };
                    black_box(balancer.pick(black_box(&backends), &pick))
                })
            });
        }
    }
    group.finish();
}

fn maglev_build(c: &mut Criterion) {
    let specs = specs(1000);
    let mut group = c.benchmark_group("maglev_build");
    group.sample_size(10);
    group.bench_function("1000_backends", |b| {
        b.iter(|| black_box(Maglev::new(black_box(&specs))))
    });
    group.finish();
}

criterion_group!(benches, pick, maglev_build);
criterion_main!(benches);
