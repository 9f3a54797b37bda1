use super::*;
use crate::distributions::{
    CategoricalDistribution, FloatDistribution, IntDistribution, ParamValue,
};
use crate::samplers::testing::{self, float, run};

fn box_space(d: usize) -> SearchSpace {
    (0..d)
        .map(|i| (format!("x{i}"), float(-5.0, 5.0)))
        .collect()
}

fn gp(seed: u64) -> GpSampler {
    GpSampler::new(GpOptions {
        seed: Some(seed),
        ..GpOptions::default()
    })
    .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn gp_beats_random_on_smooth_functions() {
    // An ill-conditioned, shifted quadratic: the GP should get close within 30 trials where
    // random search stays far away.
    let quadratic =
        |x: &[f64]| (x[0] - 1.0).powi(2) + 10.0 * (x[1] + 2.0).powi(2) + 0.1 * x[2] * x[2];
    // Styblinski-Tang is multimodal (2^d local minima): the GP only has to do better than
    // random there, not find the global minimum.
    let styblinski = |x: &[f64]| {
        x.iter()
            .map(|v| 0.5 * (v.powi(4) - 16.0 * v * v + 5.0 * v))
            .sum::<f64>()
            + 39.166_165_7 * x.len() as f64
    };
    type Objective<'a> = (&'a str, &'a dyn Fn(&[f64]) -> f64, f64);
    let fns: [Objective; 2] = [
        ("quadratic", &quadratic, 0.2),
        ("styblinski-tang", &styblinski, 1.0),
    ];
    for (name, f, ratio) in fns {
        let (mut g, mut r) = (Vec::new(), Vec::new());
        for seed in 0..5 {
            g.push(run(&gp(seed), 30, f, &box_space(3)).1);
            r.push(run(&RandomSampler::new(Some(seed)), 30, f, &box_space(3)).1);
        }
        let (mg, mr) = (median(g), median(r));
        assert!(mg < mr * ratio, "{name}: gp median {mg} vs random {mr}");
    }
}

#[test]
fn deterministic_for_a_seed_when_trials_run_one_after_another() {
    let f = |x: &[f64]| (x[0] - 1.0).powi(2) + (x[1] + 0.5).abs();
    let (a, _) = run(&gp(7), 16, f, &box_space(2));
    let (b, _) = run(&gp(7), 16, f, &box_space(2));
    let (c, _) = run(&gp(8), 16, f, &box_space(2));
    let params = |h: &History| -> Vec<BTreeMap<String, f64>> {
        h.trials().iter().map(|t| t.params.clone()).collect()
    };
    assert_eq!(params(&a), params(&b));
    assert_ne!(params(&a)[12..], params(&c)[12..]);
}

#[test]
fn mixed_spaces_stay_on_their_grids_and_the_gp_learns_the_categorical() {
    let space: SearchSpace = [
        ("c".to_string(), {
            let choices = ["a", "b", "c"].map(|s| ParamValue::Str(s.into())).to_vec();
            Distribution::Categorical(CategoricalDistribution::new(choices).unwrap())
        }),
        (
            "i".to_string(),
            Distribution::Int(IntDistribution::new(-3, 7, false, 2).unwrap()),
        ),
        (
            "l".to_string(),
            Distribution::Float(FloatDistribution::new(1e-4, 1.0, true, None).unwrap()),
        ),
        (
            "n".to_string(),
            Distribution::Int(IntDistribution::new(1, 100_000, true, 1).unwrap()),
        ),
        (
            "s".to_string(),
            Distribution::Float(FloatDistribution::new(0.0, 1.0, false, Some(0.25)).unwrap()),
        ),
    ]
    .into();
    // Best: choice "b" (index 1), i = 3, l = 1e-2, n = 300, s = 0.75.
    let f = |x: &[f64]| {
        f64::from(u8::from(x[0] != 1.0)) * 3.0
            + (x[1] - 3.0).abs()
            + (x[2].log10() + 2.0).powi(2)
            + (x[3].log10() - 300f64.log10()).powi(2)
            + (x[4] - 0.75).abs()
    };
    let (h, best) = run(&gp(1), 40, f, &space);
    for t in h.trials() {
        let (i, s) = (t.params["i"], t.params["s"]);
        assert!((i + 3.0) % 2.0 == 0.0, "i={i} off its step grid");
        assert!((s * 4.0).fract() == 0.0, "s={s} off its step grid");
        assert_eq!(t.params["n"].fract(), 0.0);
    }
    let late_b = h.trials()[30..]
        .iter()
        .filter(|t| t.params["c"] == 1.0)
        .count();
    assert!(
        late_b >= 7,
        "the GP kept trying worse choices: {late_b}/10 picked b"
    );
    assert!(best < 0.5, "best {best}");
}

#[test]
fn a_running_trial_pushes_the_next_sample_away_from_it() {
    let f = |x: &[f64]| (x[0] - 1.0).powi(2) + (x[1] - 2.0).powi(2);
    let space = box_space(2);
    let sampler = gp(3);
    let (mut h, _) = run(&sampler, 15, f, &space);
    // Two trials start before either finishes.
    let t1 = h.create_trial(TrialState::Running);
    let rel1 = sampler.sample_relative(&h, t1, &space);
    h.set_relative_params(t1, &rel1, &space).unwrap();
    for (name, dist) in &space {
        h.set_param(t1, name, rel1[name], dist).unwrap();
    }
    let t2 = h.create_trial(TrialState::Running);
    let rel2 = sampler.sample_relative(&h, t2, &space);
    let dist: f64 = space
        .keys()
        .map(|k| (rel1[k] - rel2[k]).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        dist > 1e-3,
        "both trials got the same point: {rel1:?} {rel2:?}"
    );
}

#[test]
fn startup_trials_use_the_independent_sampler() {
    let sampler = gp(0);
    let space = box_space(2);
    let (h, _) = run(&sampler, 9, |x| x[0], &space);
    assert!(sampler.sample_relative(&h, 9, &space).is_empty());
}

/// ZDT1 over three parameters in [0, 1]: the front is x1 = x2 = 0, f2 = 1 - sqrt(f1).
fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * (x[1] + x[2]) / 2.0;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

fn unit_space(d: usize) -> SearchSpace {
    (0..d).map(|i| (format!("x{i}"), float(0.0, 1.0))).collect()
}

#[test]
fn several_objectives_search_by_expected_hypervolume_improvement() {
    let space = unit_space(3);
    let directions = vec![StudyDirection::Minimize; 2];
    let hv = |h: &History| {
        let points: Vec<Vec<f64>> = h.trials().iter().filter_map(|t| t.values.clone()).collect();
        crate::multi_objective::hypervolume(&points, &[1.1, 1.1])
    };
    let (mut g, mut r) = (Vec::new(), Vec::new());
    for seed in 0..4 {
        let h = testing::run_study(&gp(seed), 30, zdt1, &space, directions.clone());
        g.push(hv(&h));
        let h = testing::run_study(
            &RandomSampler::new(Some(seed)),
            30,
            zdt1,
            &space,
            directions.clone(),
        );
        r.push(hv(&h));
    }
    let (mg, mr) = (median(g), median(r));
    // The ideal front's hypervolume is 1.1^2 - 1/3 = 0.877.
    assert!(mg > 0.8 && mg > mr + 0.3, "gp median {mg} vs random {mr}");
    // A fixed sequence for a seed, trials one after another.
    let a = testing::run_study(&gp(5), 14, zdt1, &space, directions.clone());
    let b = testing::run_study(&gp(5), 14, zdt1, &space, directions);
    assert_eq!(a.trials(), b.trials());
}

#[test]
fn the_hypervolume_improvements_gradient_matches_its_differences() {
    use rand::SeedableRng;
    let space = unit_space(3);
    let h = testing::run_study(
        &RandomSampler::new(Some(1)),
        15,
        zdt1,
        &space,
        vec![StudyDirection::Minimize; 2],
    );
    let x: Vec<f64> = (0..15)
        .flat_map(|t| space.keys().map(move |n| (t, n.clone())))
        .map(|(t, n)| h.trials()[t].params[&n])
        .collect();
    let inputs = Inputs {
        x,
        n: 15,
        d: 3,
        is_cat: vec![false; 3],
    };
    let ys: Vec<Vec<f64>> = (0..2)
        .map(|k| {
            standardize(
                &h.trials()
                    .iter()
                    .map(|t| -t.values.as_ref().unwrap()[k])
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let gps: Vec<model::Gp> = ys
        .iter()
        .map(|y| model::fit(inputs.clone(), y, false, None))
        .collect();
    let front: Vec<Vec<f64>> = (0..15).map(|i| vec![ys[0][i], ys[1][i]]).collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
    let ehvi = Ehvi::new(gps.iter().collect(), &front, &mut rng).unwrap();
    for at in [[0.05, 0.1, 0.2], [0.5, 0.02, 0.9], [0.3, 0.3, 0.3]] {
        let mut grad = vec![0.0; 3];
        let v = ehvi.eval_grad(&at, &mut grad);
        assert!((v - ehvi.eval_many(&[at.to_vec()])[0]).abs() < 1e-9);
        for p in 0..3 {
            let e = 1e-6;
            let (mut lo, mut hi) = (at.to_vec(), at.to_vec());
            lo[p] -= e;
            hi[p] += e;
            let fd = (ehvi.eval_many(&[hi])[0] - ehvi.eval_many(&[lo])[0]) / (2.0 * e);
            assert!(
                (fd - grad[p]).abs() < 1e-4 * (1.0 + fd.abs()),
                "at {at:?}, d/dx{p}: {} vs {fd}",
                grad[p]
            );
        }
    }
}

#[test]
fn normalisation_round_trips() {
    let dists = [
        float(-2.0, 3.0),
        Distribution::Float(FloatDistribution::new(0.01, 100.0, true, None).unwrap()),
        Distribution::Float(FloatDistribution::new(0.0, 1.0, false, Some(0.1)).unwrap()),
        Distribution::Int(IntDistribution::new(1, 1000, true, 1).unwrap()),
        Distribution::Int(IntDistribution::new(-10, 10, false, 5).unwrap()),
    ];
    for d in &dists {
        let p = UnitParam::new("p", d, true);
        let grid = match p.dim() {
            Dim::Grid(g) => g,
            _ => vec![0.0, 0.3, 0.77, 1.0],
        };
        for x in grid {
            let v = p.denormalize(x);
            assert!(d.contains(v), "{d:?}: {x} -> {v}");
            assert!((p.normalize(v) - x).abs() < 1e-9, "{d:?}: {x} -> {v}");
        }
    }
}

#[test]
fn bad_options_are_rejected() {
    let err = GpSampler::new(GpOptions {
        n_local_search: 1,
        ..GpOptions::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("n_local_search"), "{err}");
}

#[test]
fn hyperparameters_are_refitted_when_the_trials_grew_by_a_twentieth() {
    let sampler = gp(3);
    let sphere = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>();
    let fitted_at = |s: &GpSampler| {
        s.last_fit
            .lock()
            .first()
            .cloned()
            .flatten()
            .map(|(_, _, n)| n)
    };
    let (mut h, _) = run(&sampler, 60, sphere, &box_space(2));
    // Up to 40 trials every trial refits; from 40 on, every n/20: 40, 42, 44, ..., 58.
    assert_eq!(fitted_at(&sampler), Some(58));
    // Then 60 (60 / 20 = 3 more to go) and 63.
    for n in 60..64 {
        let t = h.create_trial(TrialState::Running);
        let space = sampler.infer_relative_search_space(&h, t);
        let rel = sampler.sample_relative(&h, t, &space);
        assert_eq!(
            fitted_at(&sampler),
            Some(if n < 63 { 60 } else { 63 }),
            "at {n}"
        );
        for (name, dist) in &space {
            h.set_param(t, name, rel[name], dist).unwrap();
        }
        h.finish(t, TrialState::Complete, Some(vec![1.0])).unwrap();
    }
}

/// Runs `n` trials of `f` (value, constraint values) one after another over `space`.
fn run_constrained(
    sampler: &GpSampler,
    n: usize,
    f: impl Fn(&[f64]) -> (f64, Vec<f64>),
    space: &SearchSpace,
) -> History {
    let f = |x: &[f64]| {
        let (y, c) = f(x);
        (vec![y], Some(c))
    };
    testing::run_constrained(sampler, n, f, space, vec![StudyDirection::Minimize])
}

#[test]
fn constraints_keep_the_search_in_the_feasible_region() {
    // The unconstrained minimum (0.8, 0.8) violates x + y <= 1; the constrained one is
    // (0.5, 0.5), value 0.18.
    let space: SearchSpace = (0..2).map(|i| (format!("x{i}"), float(0.0, 1.0))).collect();
    let f = |x: &[f64]| {
        let y = (x[0] - 0.8).powi(2) + (x[1] - 0.8).powi(2);
        (y, vec![x[0] + x[1] - 1.0, -x[0]])
    };
    let h = run_constrained(&gp(5), 40, f, &space);
    let feasible: Vec<&crate::trial::FrozenTrial> =
        h.trials().iter().filter(|t| !t.infeasible()).collect();
    let best = feasible
        .iter()
        .filter_map(|t| t.value())
        .fold(f64::INFINITY, f64::min);
    assert!(best < 0.19, "best feasible {best}");
    // The later trials hug the constrained optimum (on the boundary, violations of ~1e-5).
    let near = |h: &History, x: f64, y: f64| {
        h.trials()[25..]
            .iter()
            .filter(|t| (t.params["x0"] - x).hypot(t.params["x1"] - y) < 0.05)
            .count()
    };
    assert!(
        near(&h, 0.5, 0.5) >= 12,
        "{} of the last 15 near (0.5, 0.5)",
        near(&h, 0.5, 0.5)
    );
    // Without constraint values the GP heads for the infeasible optimum.
    let blind = run(&gp(5), 40, |x| f(x).0, &space).0;
    assert!(near(&blind, 0.8, 0.8) >= 12 && near(&blind, 0.5, 0.5) == 0);
}

#[test]
fn with_no_feasible_trial_yet_the_search_heads_for_feasibility() {
    // Only x0 > 0.9 is feasible, and no startup trial lands there (seeded): the next trials
    // are pushed by the probability of feasibility alone.
    let space: SearchSpace = (0..2).map(|i| (format!("x{i}"), float(0.0, 1.0))).collect();
    let f = |x: &[f64]| (x[1], vec![0.9 - x[0]]);
    let h = run_constrained(&gp(1), 25, f, &space);
    let late = h.trials()[15..].iter().filter(|t| !t.infeasible()).count();
    assert!(late >= 5, "{late} of the last 10 feasible");
}

#[test]
fn the_regressor_alone_gives_posteriors_and_covariances() {
    let x: Vec<Vec<f64>> = (0..12)
        .map(|i| vec![f64::from(i) / 11.0, f64::from(i % 3)])
        .collect();
    let y: Vec<f64> = x.iter().map(|r| (r[0] - 0.3).powi(2) + r[1]).collect();
    let gp = super::GpRegressor::fit(&x, &y, &[false, true], false, None).unwrap();
    let (p, q) = (vec![0.42, 1.0], vec![0.1, 2.0]);
    let post = gp.posterior(&[p.clone(), q.clone()]);
    assert!((gp.covariance(&p, &p) - post[0].1).abs() < 1e-9);
    assert!(gp.covariance(&p, &q).abs() <= (post[0].1 * post[1].1).sqrt() + 1e-9);
    // At an observation, the mean is close to what was seen (little noise is fitted).
    let at = gp.posterior(&[x[4].clone()])[0];
    assert!((at.0 - y[4]).abs() < 0.1, "{at:?} vs {}", y[4]);
    // Warm start from a previous fit; bad shapes are refused.
    assert!(super::GpRegressor::fit(&x, &y, &[false, true], true, Some(&gp)).is_ok());
    assert!(super::GpRegressor::fit(&x, &y[..3], &[false, true], false, None).is_err());
    assert!(super::GpRegressor::fit(&x, &y, &[false], false, None).is_err());
}
