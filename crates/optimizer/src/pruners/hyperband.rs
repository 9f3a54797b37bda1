//! Hyperband: several successive-halving brackets with different early-stopping rates.

use super::successive_halving::{first_complete_with_steps, Rungs};
use super::{check_at_least, Pruner};
use crate::error::OptimizerError;
use crate::history::History;

/// Hyperband (Optuna's `HyperbandPruner`): `n_brackets = floor(log_rf(max_resource /
/// min_resource)) + 1` successive-halving brackets, bracket `b` using
/// `min_early_stopping_rate = b`. Each trial belongs to one bracket and competes only with the
/// trials of its bracket.
///
/// **Bracket assignment.** Bracket `b` gets a budget `ceil(n_brackets * rf^s / (s + 1))` with
/// `s = n_brackets - 1 - b`; a trial goes to the bracket where `crc32("{bracket_key}_{number}")
/// mod total_budget` falls when the budgets are laid end to end (CRC-32 as Python's
/// `binascii.crc32`). Optuna hashes `"{study_name}_{number}"` the same way, so passing the study
/// name as `bracket_key` gives Optuna's brackets exactly; any other key gives another fixed,
/// deterministic assignment.
///
/// `max_resource = None` means `"auto"`: the last step of the first COMPLETE trial plus one (the
/// lowest-numbered COMPLETE trial with intermediate values, which is the one Optuna's frozen
/// estimate comes from in a sequential study); no pruning until a trial completes, and the
/// trials numbered up to that one have no rung values, as in Optuna. Rung values are rebuilt
/// from the history as described for
/// [`SuccessiveHalvingPruner`](super::SuccessiveHalvingPruner).
#[derive(Debug, Clone, PartialEq)]
pub struct HyperbandPruner {
    min_resource: i64,
    max_resource: Option<i64>,
    reduction_factor: i64,
    bootstrap_count: i64,
    /// None: the study's name once the pruner is bound to a study ("" before).
    bracket_key: Option<String>,
}

impl HyperbandPruner {
    /// `min_resource >= 1`; `max_resource`: `None` for `"auto"`, or `Some(n)` with
    /// `n >= min_resource`; `reduction_factor >= 2`; `bootstrap_count >= 0`, and 0 with
    /// `"auto"` (Optuna's defaults: `1, "auto", 3, 0`). Brackets are keyed by the name of the
    /// study the pruner is bound to (see [`Pruner::for_study`]), as Optuna's are.
    pub fn new(
        min_resource: i64,
        max_resource: Option<i64>,
        reduction_factor: i64,
        bootstrap_count: i64,
    ) -> Result<Self, OptimizerError> {
        check_at_least("min_resource", min_resource, 1, "the minimum resource")?;
        if let Some(m) = max_resource {
            if m < min_resource {
                return Err(OptimizerError::arg(
                    "max_resource",
                    m,
                    format!("must be 'auto' or an integer >= min_resource ({min_resource})"),
                ));
            }
        }
        check_at_least(
            "reduction_factor",
            reduction_factor,
            2,
            "the reduction factor",
        )?;
        check_at_least("bootstrap_count", bootstrap_count, 0, "the bootstrap count")?;
        if bootstrap_count > 0 && max_resource.is_none() {
            return Err(OptimizerError::arg(
                "bootstrap_count",
                bootstrap_count,
                "bootstrap_count > 0 and max_resource='auto' are mutually incompatible",
            ));
        }
        Ok(HyperbandPruner {
            min_resource,
            max_resource,
            reduction_factor,
            bootstrap_count,
            bracket_key: None,
        })
    }

    /// Keys the brackets with `bracket_key` instead of the study's name.
    pub fn with_bracket_key(mut self, bracket_key: impl Into<String>) -> Self {
        self.bracket_key = Some(bracket_key.into());
        self
    }

    /// The bracket budgets for the current history, None while `max_resource` is unknown or when
    /// there is no bracket.
    fn budgets(&self, history: &History) -> Option<Vec<u64>> {
        let max_resource = match self.max_resource {
            Some(m) => m,
            None => first_complete_with_steps(history)?.1.checked_add(1)?,
        };
        // Same floating-point formula as Optuna, so boundary cases (exact powers) agree.
        let ratio = max_resource as f64 / self.min_resource as f64;
        let n_brackets = (ratio.ln() / (self.reduction_factor as f64).ln()).floor() + 1.0;
        if n_brackets.is_nan() || n_brackets < 1.0 {
            return None;
        }
        let n_brackets = n_brackets as u32;
        let rf = u128::try_from(self.reduction_factor).ok()?;
        (0..n_brackets)
            .map(|b| {
                let s = n_brackets - 1 - b;
                let num = u128::from(n_brackets).checked_mul(rf.checked_pow(s)?)?;
                u64::try_from(num.div_ceil(u128::from(s) + 1)).ok()
            })
            .collect()
    }

    /// The bracket of trial `number` given the budgets.
    fn bracket(&self, budgets: &[u64], number: u64) -> usize {
        let total: u64 = budgets.iter().sum();
        let mut n = u64::from(crc32(
            format!("{}_{number}", self.bracket_key.as_deref().unwrap_or("")).as_bytes(),
        )) % total.max(1);
        for (b, budget) in budgets.iter().enumerate() {
            if n < *budget {
                return b;
            }
            n -= budget;
        }
        budgets.len().saturating_sub(1)
    }

    /// The bracket Hyperband assigns to trial `number` with the current history, None while
    /// there are no brackets yet (`max_resource = "auto"` and nothing COMPLETE).
    pub fn bracket_of(&self, history: &History, number: u64) -> Option<usize> {
        let budgets = self.budgets(history)?;
        Some(self.bracket(&budgets, number))
    }
}

impl Pruner for HyperbandPruner {
    fn prune(&self, history: &History, trial: u64) -> bool {
        let Some(budgets) = self.budgets(history) else {
            return false;
        };
        let bracket = self.bracket(&budgets, trial);
        let rungs = Rungs {
            min_resource: self.min_resource,
            reduction_factor: self.reduction_factor,
            min_early_stopping_rate: bracket as i64,
            bootstrap_count: self.bootstrap_count,
        };
        // With "auto", trials up to the first COMPLETE one ran before Optuna set up its brackets:
        // they recorded no rung.
        let first = match self.max_resource {
            Some(_) => None,
            None => first_complete_with_steps(history).map(|(n, _)| n),
        };
        rungs.prune(history, trial, |t| {
            first.is_none_or(|f| t.number > f) && self.bracket(&budgets, t.number) == bracket
        })
    }

    fn for_study(&self, study_name: &str) -> Option<Box<dyn Pruner>> {
        self.bracket_key
            .is_none()
            .then(|| Box::new(self.clone().with_bracket_key(study_name)) as Box<dyn Pruner>)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib / Python's `binascii.crc32`).
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{check_scenarios, history};
    use super::*;
    use crate::trial::StudyDirection;
    use crate::trial::TrialState::{Complete, Running};

    #[test]
    fn matches_optuna_on_scripted_studies() {
        // Study names are passed as bracket keys, so brackets are Optuna's too.
        check_scenarios("hyperband");
    }

    #[test]
    fn crc32_matches_binascii() {
        // python3 -c 'import binascii; print(binascii.crc32(b"..."))'
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"hb_0"), 2_407_493_257);
        assert_eq!(crc32(b"my-study_17"), 2_344_069_863);
    }

    #[test]
    fn brackets_and_budgets_follow_optuna() {
        // Optuna 5.0, HyperbandPruner(min_resource=1, max_resource=81, reduction_factor=3) in a
        // study named "hb": n_brackets 5, budgets [81, 34, 15, 8, 5]; `_get_bracket_id` for
        // trials 0..10 gives the brackets below.
        let p = HyperbandPruner::new(1, Some(81), 3, 0)
            .unwrap()
            .with_bracket_key("hb");
        let h = History::new(vec![StudyDirection::Minimize]);
        assert_eq!(p.budgets(&h), Some(vec![81, 34, 15, 8, 5]));
        let got: Vec<usize> = (0..10).map(|n| p.bracket_of(&h, n).unwrap()).collect();
        assert_eq!(got, EXPECTED_HB_BRACKETS);
        // max_resource == min_resource: one bracket.
        let one = HyperbandPruner::new(4, Some(4), 3, 0)
            .unwrap()
            .with_bracket_key("x");
        assert_eq!(one.budgets(&h), Some(vec![1]));
        // auto: unknown until a trial completes, then last step + 1 (Optuna: 4 brackets, since
        // log(27) / log(3) rounds to 3.0000000000000004).
        let auto = HyperbandPruner::new(1, None, 3, 0)
            .unwrap()
            .with_bracket_key("hb");
        assert_eq!(auto.bracket_of(&h, 0), None);
        let steps: Vec<(i64, f64)> = (0..27).map(|s| (s, 1.0)).collect();
        let h = history(
            StudyDirection::Minimize,
            &[(Complete, Some(1.0), &steps), (Running, None, &[(0, 5.0)])],
        );
        assert_eq!(auto.budgets(&h), Some(vec![27, 12, 6, 4]));
        assert!(!auto.prune(&History::new(vec![StudyDirection::Minimize]), 0));
    }

    const EXPECTED_HB_BRACKETS: [usize; 10] = [0, 1, 0, 3, 0, 0, 0, 1, 1, 1];

    #[test]
    fn binds_to_the_study_name_unless_keyed() {
        let p = HyperbandPruner::new(1, Some(81), 3, 0).unwrap();
        assert!(p.for_study("s").is_some());
        assert!(p.with_bracket_key("k").for_study("s").is_none());
    }

    #[test]
    fn different_keys_give_different_assignments() {
        let h = History::new(vec![StudyDirection::Minimize]);
        let a = HyperbandPruner::new(1, Some(81), 3, 0)
            .unwrap()
            .with_bracket_key("a");
        let b = a.clone().with_bracket_key("b");
        let ba: Vec<_> = (0..50).map(|n| a.bracket_of(&h, n)).collect();
        let bb: Vec<_> = (0..50).map(|n| b.bracket_of(&h, n)).collect();
        assert_ne!(ba, bb);
        assert_eq!(ba, (0..50).map(|n| a.bracket_of(&h, n)).collect::<Vec<_>>());
    }

    #[test]
    fn validation_names_the_argument() {
        let e = |r: Result<HyperbandPruner, OptimizerError>| r.unwrap_err().to_string();
        assert!(e(HyperbandPruner::new(0, Some(10), 3, 0)).contains("min_resource=0"));
        assert!(e(HyperbandPruner::new(5, Some(4), 3, 0)).contains("max_resource=4"));
        assert!(e(HyperbandPruner::new(1, Some(10), 1, 0)).contains("reduction_factor=1"));
        assert!(e(HyperbandPruner::new(1, Some(10), 3, -2)).contains("bootstrap_count=-2"));
        assert!(e(HyperbandPruner::new(1, None, 3, 1)).contains("max_resource='auto'"));
        assert!(HyperbandPruner::new(1, Some(10), 3, 1).is_ok());
    }
}
