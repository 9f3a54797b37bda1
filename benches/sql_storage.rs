//! What the SQL storages' synchronous interface costs: the hop from a blocking caller into the
//! SQL runtime (`block_on` on a one-worker runtime, as `storage/sql.rs` does) against the
//! storage operations a trial performs on SQLite (created, one param, finished), with the
//! database in RAM (/dev/shm when there is one): the cheapest SQL a trial can cost.
//!
//! `cargo bench -p dspex-engine --bench sql_storage`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use dspex_engine::optimizer::{Distribution, FloatDistribution, StudyDirection, TrialState};
use dspex_engine::{SqlOptions, SqlStorage, Storage};

fn hop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    c.bench_function("block_on hop into the SQL runtime", |b| {
        b.iter(|| rt.block_on(async { std::hint::black_box(1) }))
    });
}

fn sqlite_trial(c: &mut Criterion) {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("dspex-bench-sql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite:///{}", dir.join("bench.db").display());
    let st: Arc<dyn Storage> =
        Arc::new(SqlStorage::open(&url, SqlOptions::default()).expect("open SQLite"));
    let study = st
        .create_new_study(&[StudyDirection::Minimize], Some("bench"))
        .expect("study");
    let dist = Distribution::Float(FloatDistribution::new(0.0, 1.0, false, None).expect("dist"));
    c.bench_function("SQLite trial: create, one param, finish", |b| {
        b.iter(|| {
            let n = st.create_new_trial(study, None).expect("trial");
            st.set_trial_param(study, n, "x", 0.5, &dist)
                .expect("param");
            st.set_trial_state_values(study, n, TrialState::Complete, Some(vec![0.5]), None)
                .expect("finish");
        })
    });
    drop(st);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, hop, sqlite_trial);
criterion_main!(benches);
