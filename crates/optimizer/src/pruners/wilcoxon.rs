//! Pruning with a Wilcoxon signed-rank test against the best trial.

use std::cmp::Ordering;

use super::{check_at_least, target, Pruner};
use crate::error::OptimizerError;
use crate::history::History;
use crate::trial::{FrozenTrial, StudyDirection, TrialState};

/// Optuna's `WilcoxonPruner`: pairs the current trial's intermediate values with the best
/// trial's at the same steps (e.g. scores on the same folds or instances) and prunes when a
/// one-sided Wilcoxon signed-rank test says the current trial is worse, with p-value below
/// `p_threshold`.
///
/// - Nothing is pruned before `max(2, n_startup_steps)` common steps, nor when the current or
///   the best trial has a non-finite intermediate value, nor when the best trial has none.
/// - The best trial is the COMPLETE trial with the best first value (ties: the smallest number,
///   which in a sequential study is Optuna's, the first one to reach that value).
/// - Safety rule from Optuna: when the test says "worse" but the best trial's mean intermediate
///   value is not better than the current trial's mean, the trial is kept.
/// - The test is `scipy.stats.wilcoxon(diff, alternative, zero_method="zsplit")` (see
///   [`wilcoxon_signed_rank_p_value`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WilcoxonPruner {
    p_threshold: f64,
    n_startup_steps: i64,
}

impl WilcoxonPruner {
    /// `p_threshold` in [0, 1]; `n_startup_steps >= 0` (Optuna's defaults: 0.1, 2).
    pub fn new(p_threshold: f64, n_startup_steps: i64) -> Result<Self, OptimizerError> {
        if !(0.0..=1.0).contains(&p_threshold) {
            return Err(OptimizerError::arg(
                "p_threshold",
                p_threshold,
                "must be between 0 and 1",
            ));
        }
        check_at_least(
            "n_startup_steps",
            n_startup_steps,
            0,
            "the number of startup steps",
        )?;
        Ok(WilcoxonPruner {
            p_threshold,
            n_startup_steps,
        })
    }
}

/// The COMPLETE trial with the best first value (smallest number among ties).
fn best_trial(history: &History, direction: StudyDirection) -> Option<&FrozenTrial> {
    history
        .trials()
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.value().filter(|v| !v.is_nan()).map(|v| (t, v)))
        .reduce(|a, b| if direction.better(b.1, a.1) { b } else { a })
        .map(|(t, _)| t)
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len() as f64;
    values.sum::<f64>() / n
}

impl Pruner for WilcoxonPruner {
    fn prune(&self, history: &History, trial: u64) -> bool {
        let Some((t, direction)) = target(history, trial) else {
            return false;
        };
        let current = &t.intermediate_values;
        if current.is_empty() || current.values().any(|v| !v.is_finite()) {
            return false;
        }
        let Some(best) = best_trial(history, direction) else {
            return false;
        };
        let reference = &best.intermediate_values;
        if reference.is_empty() || reference.values().any(|v| !v.is_finite()) {
            return false;
        }
        let diff: Vec<f64> = current
            .iter()
            .filter_map(|(s, v)| reference.get(s).map(|b| v - b))
            .collect();
        let needed = usize::try_from(self.n_startup_steps)
            .unwrap_or(usize::MAX)
            .max(2);
        if diff.len() < needed {
            return false;
        }
        let (mean_best, mean_current) = (
            mean(reference.values().copied()),
            mean(current.values().copied()),
        );
        let (alternative, average_is_best) = match direction {
            StudyDirection::Maximize => (Alternative::Less, mean_best <= mean_current),
            StudyDirection::Minimize => (Alternative::Greater, mean_best >= mean_current),
        };
        let p = wilcoxon_signed_rank_p_value(&diff, alternative);
        p < self.p_threshold && !average_is_best
    }
}

/// The alternative hypothesis of [`wilcoxon_signed_rank_p_value`] about the differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alternative {
    /// The differences are not centred on zero.
    TwoSided,
    /// The differences tend to be negative.
    Less,
    /// The differences tend to be positive.
    Greater,
}

/// The p-value of the Wilcoxon signed-rank test on paired differences `d`, as
/// `scipy.stats.wilcoxon(d, alternative=..., zero_method="zsplit")` computes it (scipy 1.17,
/// default `method="auto"`, no continuity correction):
///
/// - zero differences are kept and ranked, half of their ranks going to each sign ("zsplit");
///   tied absolute differences get their average rank; the statistic is the positive rank sum;
/// - more than 50 differences: normal approximation with tie correction;
/// - otherwise, without ties or zeros: the exact null distribution of the rank sum;
/// - with ties or zeros and at most 13 differences: the exact permutation test over all `2^n`
///   sign flips (what scipy's permutation test does deterministically at that size);
/// - with ties or zeros and 14 to 50 differences: normal approximation.
///
/// Returns NaN for an empty input or one containing NaN.
pub fn wilcoxon_signed_rank_p_value(d: &[f64], alternative: Alternative) -> f64 {
    let n = d.len();
    if n == 0 || d.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    // Average ranks of |d| and tie groups.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        d[a].abs()
            .partial_cmp(&d[b].abs())
            .unwrap_or(Ordering::Equal)
    });
    let mut ranks = vec![0.0; n];
    let mut tie_correct = 0.0;
    let mut has_ties = false;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && d[order[j]].abs() == d[order[i]].abs() {
            j += 1;
        }
        let count = (j - i) as f64;
        let rank = (i + 1) as f64 + (count - 1.0) / 2.0;
        for &k in &order[i..j] {
            ranks[k] = rank;
        }
        has_ties |= j - i > 1;
        tie_correct += count * count * count - count;
        i = j;
    }
    let n_zero = d.iter().filter(|v| **v == 0.0).count();
    let zero_half: f64 = (0..n)
        .filter(|&k| d[k] == 0.0)
        .map(|k| ranks[k])
        .sum::<f64>()
        / 2.0;
    let r_plus = (0..n)
        .filter(|&k| d[k] > 0.0)
        .map(|k| ranks[k])
        .sum::<f64>()
        + zero_half;

    if n <= 50 && !has_ties && n_zero == 0 {
        return exact_p_value(n, r_plus, alternative);
    }
    if n <= 13 {
        return permutation_p_value(d, &ranks, zero_half, r_plus, alternative);
    }
    let count = n as f64;
    let mn = count * (count + 1.0) * 0.25;
    let se = count * (count + 1.0) * (2.0 * count + 1.0);
    let se = ((se - tie_correct / 2.0) / 24.0).sqrt();
    let z = (r_plus - mn) / se;
    match alternative {
        Alternative::Less => normal_cdf(z),
        Alternative::Greater => normal_cdf(-z),
        Alternative::TwoSided => 2.0 * normal_cdf(-z.abs()),
    }
}

/// Standard normal CDF, to about 1e-14 relative (statrs' `erfc` is off by up to ~1e-10
/// relative around 0.7, enough to move p-values visibly away from scipy's).
fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    if x < 0.0 {
        0.5 * erfc_nonneg(-x)
    } else {
        1.0 - 0.5 * erfc_nonneg(x)
    }
}

/// erfc(x) for x >= 0: `1 - erf(x)` from the positive series
/// `erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))` below 1, and the
/// continued fraction `erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`
/// (modified Lentz) from 1 on.
fn erfc_nonneg(x: f64) -> f64 {
    const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;
    if x.is_nan() {
        return f64::NAN;
    }
    if x > 27.0 {
        return 0.0;
    }
    let x2 = x * x;
    if x < 1.0 {
        let (mut term, mut sum) = (x, x);
        let mut n = 0.0;
        while term > sum * 1e-17 {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        return 1.0 - 2.0 * FRAC_1_SQRT_PI * (-x2).exp() * sum;
    }
    let tiny = 1e-300;
    let mut f = x;
    let (mut c, mut d) = (x, 0.0);
    for k in 1..5000 {
        let a = k as f64 / 2.0;
        d = x + a * d;
        d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
        c = x + a / c;
        if c.abs() < tiny {
            c = tiny;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    FRAC_1_SQRT_PI * (-x2).exp() / f
}

/// Exact test without ties or zeros: the rank sum of `n` distinct ranks under random signs.
fn exact_p_value(n: usize, r_plus: f64, alternative: Alternative) -> f64 {
    // counts[k] = number of sign patterns with positive rank sum k (fits u64 for n <= 50).
    let max = n * (n + 1) / 2;
    let mut counts = vec![0u64; max + 1];
    counts[0] = 1;
    for r in 1..=n {
        for k in (r..=r * (r + 1) / 2).rev() {
            counts[k] += counts[k - r];
        }
    }
    let total = (n as f64).exp2();
    // r_plus is an integer here (no ties); clamp for safety.
    let k = r_plus.round().clamp(0.0, max as f64) as usize;
    let cdf = counts[..=k].iter().sum::<u64>() as f64 / total;
    let sf = counts[k..].iter().sum::<u64>() as f64 / total;
    match alternative {
        Alternative::Less => cdf,
        Alternative::Greater => sf,
        Alternative::TwoSided => (2.0 * cdf.min(sf)).min(1.0),
    }
}

/// Exact permutation test over all sign flips (n <= 13): the fraction of flips whose statistic
/// is at least (greater) / at most (less) the observed one, with scipy's relative tolerance.
fn permutation_p_value(
    d: &[f64],
    ranks: &[f64],
    zero_half: f64,
    observed: f64,
    alternative: Alternative,
) -> f64 {
    let nonzero: Vec<f64> = d
        .iter()
        .zip(ranks)
        .filter(|(v, _)| **v != 0.0)
        .map(|(_, r)| *r)
        .collect();
    let gamma = (f64::EPSILON * 100.0 * observed).abs();
    let (mut le, mut ge) = (0u64, 0u64);
    let patterns = 1u64 << nonzero.len();
    for mask in 0..patterns {
        let stat = nonzero
            .iter()
            .enumerate()
            .filter(|(i, _)| mask >> i & 1 == 1)
            .map(|(_, r)| *r)
            .sum::<f64>()
            + zero_half;
        le += u64::from(stat <= observed + gamma);
        ge += u64::from(stat >= observed - gamma);
    }
    // Flipping a zero changes nothing: counting over the non-zero signs gives the same ratio.
    let total = patterns as f64;
    let (less, greater) = (le as f64 / total, ge as f64 / total);
    match alternative {
        Alternative::Less => less,
        Alternative::Greater => greater,
        Alternative::TwoSided => (2.0 * less.min(greater)).min(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_scenarios, history};
    use super::*;
    use crate::trial::TrialState::{Complete, Running};

    #[test]
    fn matches_optuna_on_scripted_studies() {
        check_scenarios("wilcoxon");
    }

    #[test]
    fn p_values_match_scipy() {
        // scipy 1.17.1: scipy.stats.wilcoxon(d, alternative=alt, zero_method="zsplit").pvalue,
        // recorded in tests/data/pruners_optuna.json ("wilcoxon_p_values") by pruners_optuna.py.
        let data: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/pruners_optuna.json")).unwrap();
        let cases = data["wilcoxon_p_values"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let d: Vec<f64> = case["d"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (alt, key) in [
                (Alternative::Less, "less"),
                (Alternative::Greater, "greater"),
                (Alternative::TwoSided, "two-sided"),
            ] {
                let want = case[key].as_f64().unwrap();
                let got = wilcoxon_signed_rank_p_value(&d, alt);
                assert!(
                    (got - want).abs() <= 1e-12 * want.max(1e-300) + 1e-15,
                    "{d:?} {key}: {got} vs scipy {want}"
                );
            }
        }
        assert!(wilcoxon_signed_rank_p_value(&[], Alternative::Less).is_nan());
    }

    #[test]
    fn normal_cdf_is_accurate() {
        // scipy.special.ndtr at these points.
        for (z, want) in [
            (-0.9742360096347987, 0.16496968446777982),
            (0.0, 0.5),
            (1.0, 0.8413447460685429),
            (-2.5, 0.006209665325776132),
            (-3.0, 0.0013498980316300933),
            (-6.0, 9.865876450376946e-10),
            (-10.0, 7.61985302416047e-24),
            (2.9, 0.998134186699616),
        ] {
            let got = normal_cdf(z);
            // 1e-13: far in the tail, the rounding of z / sqrt(2) alone moves exp(-x^2) by ~1e-14.
            assert!((got - want).abs() <= 1e-13 * want, "{z}: {got} vs {want}");
        }
    }

    #[test]
    fn clearly_worse_trial_is_pruned_and_better_one_kept() {
        // Minimize; the best trial scores 1.0 on each of 10 instances.
        let best: Vec<(i64, f64)> = (0..10).map(|s| (s, 1.0 + 0.01 * s as f64)).collect();
        let worse: Vec<(i64, f64)> = (0..10).map(|s| (s, 2.0 + 0.03 * s as f64)).collect();
        let better: Vec<(i64, f64)> = (0..10).map(|s| (s, 0.5 + 0.02 * s as f64)).collect();
        let p = WilcoxonPruner::new(0.1, 2).unwrap();
        for (dir, iv, expect) in [
            (StudyDirection::Minimize, &worse, true),
            (StudyDirection::Minimize, &better, false),
            (StudyDirection::Maximize, &worse, false),
            (StudyDirection::Maximize, &better, true),
        ] {
            let h = history(dir, &[(Complete, Some(1.0), &best), (Running, None, iv)]);
            assert_eq!(p.prune(&h, 1), expect, "{dir:?}");
        }
        // Too few common steps, non-finite values, no best trial: never pruned.
        let h = history(
            StudyDirection::Minimize,
            &[(Complete, Some(1.0), &best), (Running, None, &worse[..1])],
        );
        assert!(!p.prune(&h, 1));
        let bad = [(0, 5.0), (1, f64::INFINITY), (2, 5.0)];
        let h = history(
            StudyDirection::Minimize,
            &[(Complete, Some(1.0), &best), (Running, None, &bad)],
        );
        assert!(!p.prune(&h, 1));
        let h = history(StudyDirection::Minimize, &[(Running, None, &worse)]);
        assert!(!p.prune(&h, 0));
        let strict = WilcoxonPruner::new(0.1, 20).unwrap();
        let h = history(
            StudyDirection::Minimize,
            &[(Complete, Some(1.0), &best), (Running, None, &worse)],
        );
        assert!(
            !strict.prune(&h, 1),
            "n_startup_steps above the number of common steps"
        );
    }

    #[test]
    fn validation_names_the_argument() {
        let e = WilcoxonPruner::new(1.5, 2).unwrap_err().to_string();
        assert!(e.contains("p_threshold=1.5"), "{e}");
        assert!(WilcoxonPruner::new(f64::NAN, 2).is_err());
        let e = WilcoxonPruner::new(0.1, -1).unwrap_err().to_string();
        assert!(e.contains("n_startup_steps=-1"), "{e}");
        assert!(WilcoxonPruner::new(0.0, 0).is_ok() && WilcoxonPruner::new(1.0, 0).is_ok());
    }
}
