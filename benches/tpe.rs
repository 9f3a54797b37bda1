//! Criterion benchmark: one TPE sample (relative, multivariate) after N finished trials in D
//! float dimensions, and one independent sample of one float (the default TPE's per-suggest
//! work) after N trials. Every iteration samples the same history, so the sampler's kept above
//! estimator needs no change: this measures the scoring, the below estimator and the split.
//! `tpe_ask_tell_1d` is the default TPE's per-trial work in a running study: ask one float
//! while 256 trials run, tell the oldest, between 2,048 and 3,072 finished trials, so the
//! kept above estimator changes as it does in a study.
//! Run: `cargo bench -p dspex-optimizer --bench tpe`.

// The allocator dspex ships with (the extension module and the CLI use it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dspex_optimizer::samplers::{Sampler, TpeOptions, TpeSampler};
use dspex_optimizer::{
    Distribution, FloatDistribution, History, SearchSpace, StudyDirection, TrialState,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn history(n_trials: usize, dims: usize) -> (History, SearchSpace, u64) {
    let space: SearchSpace = (0..dims)
        .map(|i| {
            (
                format!("x{i:02}"),
                Distribution::Float(FloatDistribution::new(-5.0, 5.0, false, None).unwrap()),
            )
        })
        .collect();
    let mut rng = SmallRng::seed_from_u64(0);
    let mut h = History::new(vec![StudyDirection::Minimize]);
    for _ in 0..n_trials {
        let t = h.create_trial(TrialState::Running);
        let mut y = 0.0;
        for (name, dist) in &space {
            let x: f64 = rng.random_range(-5.0..5.0);
            y += x * x;
            h.set_param(t, name, x, dist).unwrap();
        }
        h.finish(t, TrialState::Complete, Some(vec![y])).unwrap();
    }
    let current = h.create_trial(TrialState::Running);
    (h, space, current)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tpe_sample");
    group.sample_size(20);
    for &n in &[100usize, 1_000, 10_000] {
        for &d in &[2usize, 10, 40] {
            let (h, _space, t) = history(n, d);
            let sampler = TpeSampler::new(TpeOptions {
                seed: Some(1),
                ..TpeOptions::default()
            })
            .unwrap();
            let rel = sampler.infer_relative_search_space(&h, t);
            assert_eq!(rel.len(), d);
            group.bench_with_input(BenchmarkId::new(format!("{d}d"), n), &n, |b, _| {
                b.iter(|| black_box(sampler.sample_relative(&h, t, &rel)))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("tpe_sample_independent");
    group.sample_size(30);
    for &n in &[1_000usize, 2_500, 10_000, 20_000] {
        let (h, space, t) = history(n, 1);
        let (name, dist) = space.iter().next().unwrap();
        let sampler = TpeSampler::new(TpeOptions {
            seed: Some(1),
            ..TpeOptions::default()
        })
        .unwrap();
        group.bench_with_input(BenchmarkId::new("1d", n), &n, |b, _| {
            b.iter(|| black_box(sampler.prepare_independent(&h, t, name, dist)()))
        });
    }
    group.finish();
}

/// A study of `x` in [-10, 10] minimising `x^2`, 256 trials running: ask one, tell the oldest.
struct Steady {
    sampler: TpeSampler,
    history: History,
    running: VecDeque<(u64, f64)>,
    dist: Distribution,
}

impl Steady {
    fn new() -> Self {
        let mut s = Steady {
            sampler: TpeSampler::new(TpeOptions {
                seed: Some(1),
                ..TpeOptions::default()
            })
            .unwrap(),
            history: History::new(vec![StudyDirection::Minimize]),
            running: VecDeque::new(),
            dist: Distribution::Float(FloatDistribution::new(-10.0, 10.0, false, None).unwrap()),
        };
        while s.history.n_finished_for_sampling() < 2_048 {
            s.step();
        }
        s
    }

    fn step(&mut self) {
        if self.running.len() >= 256 {
            let (t, x) = self.running.pop_front().unwrap();
            let h = &mut self.history;
            h.finish(t, TrialState::Complete, Some(vec![x * x]))
                .unwrap();
        }
        let t = self.history.create_trial(TrialState::Running);
        let x = self
            .sampler
            .prepare_independent(&self.history, t, "x", &self.dist)();
        self.history.set_param(t, "x", x, &self.dist).unwrap();
        self.running.push_back((t, x));
    }
}

fn bench_steady(c: &mut Criterion) {
    let mut state = Steady::new();
    c.bench_function("tpe_ask_tell_1d", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if state.history.n_finished_for_sampling() >= 3_072 {
                    state = Steady::new();
                }
                let t0 = Instant::now();
                state.step();
                spent += t0.elapsed();
            }
            spent
        })
    });
}

criterion_group!(benches, bench, bench_steady);
criterion_main!(benches);
