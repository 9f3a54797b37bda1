//! Parameter distributions: float, int and categorical, with Optuna's internal representation
//! (floats and ints as `f64`, categoricals as the index of the choice) and Optuna's JSON form.

use std::fmt;

use serde_json::{json, Map, Value};

use crate::error::DistributionError;

/// One categorical choice, or an external parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Python's `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (NaN allowed).
    Float(f64),
    /// A string.
    Str(String),
}

impl ParamValue {
    /// Strict equality used to find a choice: same kind and same value (NaN equals NaN).
    pub fn same_choice(&self, other: &ParamValue) -> bool {
        match (self, other) {
            (ParamValue::Float(a), ParamValue::Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => self == other,
        }
    }

    /// The value as JSON, as Optuna stores categorical choices (a non-finite float becomes
    /// `null`, JSON having no NaN or infinity).
    pub fn to_json(&self) -> Value {
        match self {
            ParamValue::None => Value::Null,
            ParamValue::Bool(b) => Value::Bool(*b),
            ParamValue::Int(i) => json!(i),
            ParamValue::Float(f) => float_to_json(*f),
            ParamValue::Str(s) => Value::String(s.clone()),
        }
    }

    /// Reads a choice from JSON: `null`, a bool, a number (an integer when it fits in `i64`)
    /// or a string; arrays and objects are rejected.
    pub fn from_json(value: &Value) -> Result<ParamValue, DistributionError> {
        Ok(match value {
            Value::Null => ParamValue::None,
            Value::Bool(b) => ParamValue::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    ParamValue::Int(i)
                } else if let Some(f) = n.as_f64() {
                    ParamValue::Float(f)
                } else {
                    return Err(DistributionError::Json(format!(
                        "number {n} is out of range"
                    )));
                }
            }
            Value::String(s) => ParamValue::Str(s.clone()),
            other => {
                return Err(DistributionError::Json(format!(
                    "a categorical choice must be null, a bool, a number or a string, got {other}"
                )))
            }
        })
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::None => write!(f, "None"),
            ParamValue::Bool(true) => write!(f, "True"),
            ParamValue::Bool(false) => write!(f, "False"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x:?}"),
            ParamValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

fn float_to_json(f: f64) -> Value {
    // JSON has no NaN/inf; Optuna's json.dumps writes them as bare tokens which serde can't.
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A continuous (optionally stepped or log-scaled) range.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatDistribution {
    /// Lowest value, inclusive (> 0 when `log`).
    pub low: f64,
    /// Highest value, inclusive (on the step grid when `step` is set).
    pub high: f64,
    /// Sampled on a log scale.
    pub log: bool,
    /// Spacing of the values from `low` (None: continuous); never with `log`.
    pub step: Option<f64>,
}

/// An integer range (optionally log-scaled or stepped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntDistribution {
    /// Lowest value, inclusive (>= 1 when `log`).
    pub low: i64,
    /// Highest value, inclusive (on the step grid).
    pub high: i64,
    /// Sampled on a log scale (then `step` is 1).
    pub log: bool,
    /// Spacing of the values from `low`, >= 1.
    pub step: i64,
}

/// A finite set of choices; the internal representation is the index of the choice.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoricalDistribution {
    /// The choices, unique, in their declared order (a parameter's internal value is an index
    /// into this).
    pub choices: Vec<ParamValue>,
}

/// Any distribution a parameter can be sampled from.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// A float range (Optuna's `FloatDistribution`).
    Float(FloatDistribution),
    /// An integer range (Optuna's `IntDistribution`).
    Int(IntDistribution),
    /// A set of choices (Optuna's `CategoricalDistribution`).
    Categorical(CategoricalDistribution),
}

/// A distribution together with the note Optuna would warn with when `high` was adjusted to
/// the step grid.
pub type Checked<T> = (T, Option<String>);

impl FloatDistribution {
    /// Validates and builds a float distribution. `high` is moved down onto the step grid when
    /// `step` does not divide the range (Optuna does the same, with a warning).
    pub fn new(
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    ) -> Result<Self, DistributionError> {
        Self::checked(low, high, log, step).map(|(d, _)| d)
    }

    /// Like [`FloatDistribution::new`], also returning the adjustment warning, if any.
    pub fn checked(
        low: f64,
        high: f64,
        log: bool,
        step: Option<f64>,
    ) -> Result<Checked<Self>, DistributionError> {
        if !low.is_finite() || !high.is_finite() {
            return Err(DistributionError::Invalid(format!(
                "low and high must be finite, got low={low}, high={high}"
            )));
        }
        if log && step.is_some() {
            return Err(DistributionError::Invalid(
                "step is not supported when log is true".into(),
            ));
        }
        if low > high {
            return Err(DistributionError::Invalid(format!(
                "low <= high must hold, got low={low}, high={high}"
            )));
        }
        if log && low <= 0.0 {
            return Err(DistributionError::Invalid(format!(
                "low > 0 must hold for log=true, got low={low}, high={high}"
            )));
        }
        let mut note = None;
        let mut high = high;
        if let Some(step) = step {
            if step.is_nan() || step <= 0.0 || !step.is_finite() {
                return Err(DistributionError::Invalid(format!(
                    "step > 0 must hold, got step={step}"
                )));
            }
            let r = (high - low) / step;
            let k = r.round();
            if (r - k).abs() > 1e-9 * r.abs().max(1.0) {
                let adjusted = round_sig(low + r.floor() * step);
                note = Some(format!(
                    "the range [{low}, {high}] is not divisible by step={step}; high is replaced with {adjusted}"
                ));
                high = adjusted;
            }
        }
        Ok((
            FloatDistribution {
                low,
                high,
                log,
                step,
            },
            note,
        ))
    }

    /// True when the range holds exactly one value (`low == high`, or a step wider than the
    /// range).
    pub fn single(&self) -> bool {
        match self.step {
            None => self.low == self.high,
            Some(step) => self.low == self.high || (self.high - self.low) < step * (1.0 - 1e-12),
        }
    }

    /// Whether `v` lies in `[low, high]` and, with a step, on the step grid (to 1e-8 of a step).
    pub fn contains(&self, v: f64) -> bool {
        if !(self.low <= v && v <= self.high) {
            return false;
        }
        match self.step {
            None => true,
            Some(step) => {
                let k = (v - self.low) / step;
                (k - k.round()).abs() < 1e-8
            }
        }
    }
}

/// Rounds to 15 significant digits, so that `0.1 + 3 * 0.3` becomes `1.0` as Optuna's
/// decimal arithmetic would give.
fn round_sig(x: f64) -> f64 {
    format!("{x:.14e}").parse().unwrap_or(x)
}

impl IntDistribution {
    /// Validates and builds an integer distribution. `high` is moved down onto the step grid
    /// when `step` does not divide the range (Optuna does the same, with a warning).
    pub fn new(low: i64, high: i64, log: bool, step: i64) -> Result<Self, DistributionError> {
        Self::checked(low, high, log, step).map(|(d, _)| d)
    }

    /// Like [`IntDistribution::new`], also returning the adjustment warning, if any.
    pub fn checked(
        low: i64,
        high: i64,
        log: bool,
        step: i64,
    ) -> Result<Checked<Self>, DistributionError> {
        if log && step != 1 {
            return Err(DistributionError::Invalid(format!(
                "step must be 1 when log is true, got step={step}"
            )));
        }
        if low > high {
            return Err(DistributionError::Invalid(format!(
                "low <= high must hold, got low={low}, high={high}"
            )));
        }
        if log && low < 1 {
            return Err(DistributionError::Invalid(format!(
                "low >= 1 must hold for log=true, got low={low}, high={high}"
            )));
        }
        if step <= 0 {
            return Err(DistributionError::Invalid(format!(
                "step > 0 must hold, got step={step}"
            )));
        }
        // The width of the range needs 65 bits: i64::MIN..=i64::MAX spans 2^64 - 1.
        let r = i128::from(high) - i128::from(low);
        let step_wide = i128::from(step);
        let mut note = None;
        let mut high = high;
        if r % step_wide != 0 {
            // At most the original high, so it fits in i64.
            let adjusted = (i128::from(low) + r / step_wide * step_wide) as i64;
            note = Some(format!(
                "the range [{low}, {high}] is not divisible by step={step}; high is replaced with {adjusted}"
            ));
            high = adjusted;
        }
        Ok((
            IntDistribution {
                low,
                high,
                log,
                step,
            },
            note,
        ))
    }

    /// The number of steps from `low` to the last grid value not above `high` (one less than
    /// the number of values; `u64::MAX` for the whole of i64 with step 1).
    pub fn n_steps(&self) -> u64 {
        let r = i128::from(self.high) - i128::from(self.low);
        (r.max(0) / i128::from(self.step.max(1))) as u64
    }

    /// The `k`-th grid value, `low + k * step`, capped at the last one.
    pub fn value_at(&self, k: u64) -> i64 {
        let k = k.min(self.n_steps());
        (i128::from(self.low) + i128::from(k) * i128::from(self.step.max(1))) as i64
    }

    /// True when the range holds exactly one value.
    pub fn single(&self) -> bool {
        self.low == self.high
            || (!self.log && i128::from(self.high) - i128::from(self.low) < i128::from(self.step))
    }

    /// The grid value nearest to `x` (an internal value, or a sampler's continuous draw),
    /// clamped to the range; a tie rounds away from `low`. NaN gives `low`.
    pub fn nearest(&self, x: f64) -> i64 {
        const EXACT: u64 = 1 << 53;
        if x.is_nan() {
            return self.low;
        }
        let n = self.n_steps();
        let step = self.step.max(1);
        if self.low.unsigned_abs() <= EXACT && self.high.unsigned_abs() <= EXACT {
            // Every grid value is an f64 integer: the step count in f64 is exact enough.
            let k = ((x - self.low as f64) / step as f64).round();
            return if k <= 0.0 {
                self.low
            } else if k >= n as f64 {
                self.value_at(n)
            } else {
                self.value_at(k as u64)
            };
        }
        // Exactly: x = whole + frac with 0 <= frac < 1, both exact (|x| <= 2^64 after the clamp).
        let x = x.clamp(-(2f64.powi(64)), 2f64.powi(64));
        let whole = x.floor();
        let frac = x - whole;
        let offset = whole as i128 - i128::from(self.low);
        if offset < 0 {
            return self.low;
        }
        let (step, q, rem) = (
            i128::from(step),
            offset / i128::from(step),
            offset % i128::from(step),
        );
        // Round up when rem + frac >= step / 2, i.e. 2 rem + 2 frac >= step with 2 frac < 2.
        let gap = step - 2 * rem;
        let k = q + i128::from(gap <= 0 || (gap == 1 && frac >= 0.5));
        self.value_at(k.min(i128::from(n)) as u64)
    }

    /// The grid value whose internal (f64) representation is `v`, if any. Beyond 2^53 several
    /// integers share one f64: the one nearest to `v` is returned (the lower on a tie).
    fn grid_value_of(&self, v: f64) -> Option<i64> {
        if !(self.low as f64 <= v && v <= self.high as f64) || v.fract() != 0.0 {
            return None;
        }
        // |v| <= 2^63: exact in i128.
        let target = v as i128;
        let (low, step) = (i128::from(self.low), i128::from(self.step.max(1)));
        let n = i128::from(self.n_steps());
        let below = (target - low).div_euclid(step);
        // i64 -> f64 conversion is monotonic, so if any grid value maps to `v`, one of the two
        // grid values of the range around `target` does.
        [below.min(n), (below + 1).max(0)]
            .into_iter()
            .filter(|k| (0..=n).contains(k))
            .map(|k| (low + k * step) as i64)
            .filter(|g| *g as f64 == v)
            .min_by_key(|g| (i128::from(*g) - target).abs())
    }

    /// Whether the internal value `v` represents one of the distribution's values.
    pub fn contains(&self, v: f64) -> bool {
        self.grid_value_of(v).is_some()
    }

    /// Whether the integer `x` is one of the distribution's values.
    pub fn contains_int(&self, x: i64) -> bool {
        self.low <= x
            && x <= self.high
            && (i128::from(x) - i128::from(self.low)) % i128::from(self.step.max(1)) == 0
    }

    /// The external value of the internal value `v`: the grid value it represents, or `v`
    /// rounded when it represents none.
    pub fn to_external(&self, v: f64) -> i64 {
        self.grid_value_of(v).unwrap_or(v.round() as i64)
    }
}

impl CategoricalDistribution {
    /// Validates and builds a categorical distribution: at least one choice, no duplicates
    /// (by [`ParamValue::same_choice`]).
    pub fn new(choices: Vec<ParamValue>) -> Result<Self, DistributionError> {
        if choices.is_empty() {
            return Err(DistributionError::Invalid(
                "choices must contain one or more elements".into(),
            ));
        }
        for (i, c) in choices.iter().enumerate() {
            if let Some(j) = choices[..i].iter().position(|p| p.same_choice(c)) {
                return Err(DistributionError::Invalid(format!(
                    "choices must be unique, but {c} appears at index {j} and {i}"
                )));
            }
        }
        Ok(CategoricalDistribution { choices })
    }

    /// The index of `value` among the choices (its internal representation), if it is one.
    pub fn index_of(&self, value: &ParamValue) -> Option<usize> {
        self.choices.iter().position(|c| c.same_choice(value))
    }
}

impl Distribution {
    /// True when the distribution admits exactly one value.
    pub fn single(&self) -> bool {
        match self {
            Distribution::Float(d) => d.single(),
            Distribution::Int(d) => d.single(),
            Distribution::Categorical(d) => d.choices.len() == 1,
        }
    }

    /// Whether an internal-representation value lies in the distribution.
    pub fn contains(&self, internal: f64) -> bool {
        match self {
            Distribution::Float(d) => d.contains(internal),
            Distribution::Int(d) => d.contains(internal),
            Distribution::Categorical(d) => {
                internal >= 0.0 && internal.fract() == 0.0 && (internal as usize) < d.choices.len()
            }
        }
    }

    /// Converts an external value to the internal `f64`, checking that it belongs here.
    pub fn to_internal(&self, value: &ParamValue) -> Result<f64, DistributionError> {
        let numeric = |v: &ParamValue| -> Option<f64> {
            match v {
                ParamValue::Int(i) => Some(*i as f64),
                ParamValue::Float(f) => Some(*f),
                ParamValue::Bool(b) => Some(f64::from(u8::from(*b))),
                _ => None,
            }
        };
        let internal = match self {
            Distribution::Float(_) | Distribution::Int(_) => numeric(value)
                .ok_or_else(|| DistributionError::Invalid(format!("{value} is not a number")))?,
            Distribution::Categorical(d) => d.index_of(value).ok_or_else(|| {
                DistributionError::Invalid(format!("{value} is not one of the choices"))
            })? as f64,
        };
        let inside = match (self, value) {
            // Checked on the integer itself: beyond 2^53 its f64 may also be a neighbour's.
            (Distribution::Int(d), ParamValue::Int(i)) => d.contains_int(*i),
            _ => self.contains(internal),
        };
        if !inside {
            return Err(DistributionError::Invalid(format!(
                "{value} is outside the distribution {}",
                self.to_json()
            )));
        }
        Ok(internal)
    }

    /// Converts an internal `f64` back to the user's value.
    pub fn to_external(&self, internal: f64) -> ParamValue {
        match self {
            Distribution::Float(_) => ParamValue::Float(internal),
            Distribution::Int(d) => ParamValue::Int(d.to_external(internal)),
            Distribution::Categorical(d) => {
                let i = (internal.max(0.0) as usize).min(d.choices.len() - 1);
                d.choices[i].clone()
            }
        }
    }

    /// Optuna's `distribution_to_json` form: `{"name": ..., "attributes": {...}}`.
    pub fn to_json(&self) -> String {
        let (name, attributes) = match self {
            Distribution::Float(d) => (
                "FloatDistribution",
                json!({
                    "step": d.step.map(float_to_json),
                    "low": float_to_json(d.low),
                    "high": float_to_json(d.high),
                    "log": d.log,
                }),
            ),
            Distribution::Int(d) => (
                "IntDistribution",
                json!({"log": d.log, "step": d.step, "low": d.low, "high": d.high}),
            ),
            Distribution::Categorical(d) => (
                "CategoricalDistribution",
                json!({"choices": d.choices.iter().map(ParamValue::to_json).collect::<Vec<_>>()}),
            ),
        };
        json!({"name": name, "attributes": attributes}).to_string()
    }

    /// Parses Optuna's JSON form, including the pre-3.0 distribution names.
    pub fn from_json(text: &str) -> Result<Distribution, DistributionError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| DistributionError::Json(format!("{e} in {text:?}")))?;
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| DistributionError::Json(format!("missing \"name\" in {text:?}")))?;
        let empty = Map::new();
        let attrs = value
            .get("attributes")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let float = |key: &str| -> Result<f64, DistributionError> {
            attrs.get(key).and_then(Value::as_f64).ok_or_else(|| {
                DistributionError::Json(format!("{name}: attribute {key:?} must be a number"))
            })
        };
        let int = |key: &str| -> Result<i64, DistributionError> {
            match attrs.get(key) {
                Some(v) => v
                    .as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                    .ok_or_else(|| {
                        DistributionError::Json(format!(
                            "{name}: attribute {key:?} must be an integer"
                        ))
                    }),
                None => Err(DistributionError::Json(format!(
                    "{name}: missing attribute {key:?}"
                ))),
            }
        };
        let flag = |key: &str| attrs.get(key).and_then(Value::as_bool).unwrap_or(false);
        Ok(match name {
            "FloatDistribution" => {
                let step = match attrs.get("step") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(float("step")?),
                };
                Distribution::Float(FloatDistribution::new(
                    float("low")?,
                    float("high")?,
                    flag("log"),
                    step,
                )?)
            }
            "UniformDistribution" => Distribution::Float(FloatDistribution::new(
                float("low")?,
                float("high")?,
                false,
                None,
            )?),
            "LogUniformDistribution" => Distribution::Float(FloatDistribution::new(
                float("low")?,
                float("high")?,
                true,
                None,
            )?),
            "DiscreteUniformDistribution" => Distribution::Float(FloatDistribution::new(
                float("low")?,
                float("high")?,
                false,
                Some(float("q")?),
            )?),
            "IntDistribution" => {
                let step = if attrs.contains_key("step") {
                    int("step")?
                } else {
                    1
                };
                Distribution::Int(IntDistribution::new(
                    int("low")?,
                    int("high")?,
                    flag("log"),
                    step,
                )?)
            }
            "IntUniformDistribution" => {
                let step = if attrs.contains_key("step") {
                    int("step")?
                } else {
                    1
                };
                Distribution::Int(IntDistribution::new(
                    int("low")?,
                    int("high")?,
                    false,
                    step,
                )?)
            }
            "IntLogUniformDistribution" => {
                Distribution::Int(IntDistribution::new(int("low")?, int("high")?, true, 1)?)
            }
            "CategoricalDistribution" => {
                let choices = attrs
                    .get("choices")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        DistributionError::Json(format!(
                            "{name}: attribute \"choices\" must be a list"
                        ))
                    })?;
                let choices = choices
                    .iter()
                    .map(ParamValue::from_json)
                    .collect::<Result<_, _>>()?;
                Distribution::Categorical(CategoricalDistribution::new(choices)?)
            }
            other => {
                return Err(DistributionError::Json(format!(
                    "unknown distribution name {other:?}"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: fmt::Debug>(r: Result<T, DistributionError>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn float_validation_names_the_bad_value() {
        assert!(err(FloatDistribution::new(2.0, 1.0, false, None)).contains("low=2"));
        assert!(err(FloatDistribution::new(0.0, 1.0, true, None)).contains("log=true"));
        assert!(err(FloatDistribution::new(-1.0, 1.0, true, None)).contains("low=-1"));
        assert!(err(FloatDistribution::new(1.0, 2.0, true, Some(0.1))).contains("step"));
        assert!(err(FloatDistribution::new(0.0, 1.0, false, Some(0.0))).contains("step=0"));
        assert!(err(FloatDistribution::new(0.0, 1.0, false, Some(-0.5))).contains("step=-0.5"));
        assert!(err(FloatDistribution::new(f64::NAN, 1.0, false, None)).contains("finite"));
        assert!(err(FloatDistribution::new(0.0, f64::INFINITY, false, None)).contains("finite"));
    }

    #[test]
    fn float_step_adjusts_high_with_a_note() {
        let (d, note) = FloatDistribution::checked(0.0, 1.0, false, Some(0.3)).unwrap();
        assert_eq!(d.high, 0.9);
        assert!(note.unwrap().contains("0.9"));
        let (d, note) = FloatDistribution::checked(0.0, 1.0, false, Some(0.1)).unwrap();
        assert_eq!(d.high, 1.0);
        assert!(note.is_none());
        let (d, note) = FloatDistribution::checked(0.1, 1.0, false, Some(0.3)).unwrap();
        assert_eq!(d.high, 1.0);
        assert!(note.is_none());
    }

    #[test]
    fn int_validation_and_adjustment() {
        assert!(err(IntDistribution::new(5, 1, false, 1)).contains("low=5"));
        assert!(err(IntDistribution::new(0, 10, true, 1)).contains("low >= 1"));
        assert!(err(IntDistribution::new(1, 10, true, 2)).contains("step=2"));
        assert!(err(IntDistribution::new(1, 10, false, 0)).contains("step=0"));
        let (d, note) = IntDistribution::checked(0, 10, false, 3).unwrap();
        assert_eq!(d.high, 9);
        assert!(note.is_some());
        assert!(IntDistribution::new(3, 3, false, 1).unwrap().single());
        assert!(IntDistribution::new(3, 4, false, 2).unwrap().single());
        assert!(!IntDistribution::new(3, 5, false, 2).unwrap().single());
    }

    #[test]
    fn int_validation_is_exact_at_the_ends_of_i64() {
        let (d, note) = IntDistribution::checked(i64::MIN, i64::MAX, false, 1).unwrap();
        assert_eq!((d.low, d.high), (i64::MIN, i64::MAX));
        assert!(note.is_none());
        assert!(!d.single());
        // 2^64 - 1 is not a multiple of 2^62: high moves down to the last grid point.
        let (d, note) = IntDistribution::checked(i64::MIN, i64::MAX, false, 1 << 62).unwrap();
        assert_eq!(d.high, 1 << 62);
        let note = note.unwrap();
        assert!(
            note.contains("not divisible by step=4611686018427387904")
                && note.contains("high is replaced with 4611686018427387904"),
            "{note}"
        );
        assert!(!d.single());
        let (d, note) = IntDistribution::checked(i64::MIN, i64::MAX, false, i64::MAX).unwrap();
        assert_eq!(d.high, i64::MAX - 1);
        assert!(note.is_some());
        let (d, note) = IntDistribution::checked(i64::MIN, -1, false, 1 << 62).unwrap();
        assert_eq!(d.high, -(1 << 62));
        assert!(note.is_some());
        let (d, note) = IntDistribution::checked(i64::MAX - 1, i64::MAX, false, 1).unwrap();
        assert_eq!(d.high, i64::MAX);
        assert!(note.is_none() && !d.single());
        assert!(IntDistribution::new(i64::MAX - 1, i64::MAX, false, 2)
            .unwrap()
            .single());
        assert!(IntDistribution::new(i64::MIN, i64::MIN + 1, false, 2)
            .unwrap()
            .single());
        assert!(!IntDistribution::new(i64::MIN, i64::MIN + 1, false, 1)
            .unwrap()
            .single());
        assert!(IntDistribution::new(i64::MAX, i64::MAX, false, i64::MAX)
            .unwrap()
            .single());
        let (d, note) = IntDistribution::checked(1, i64::MAX, true, 1).unwrap();
        assert_eq!(d.high, i64::MAX);
        assert!(note.is_none() && !d.single());

        assert!(err(IntDistribution::new(i64::MAX, i64::MIN, false, 1))
            .contains("low=9223372036854775807, high=-9223372036854775808"));
        assert!(
            err(IntDistribution::new(i64::MIN, i64::MAX, false, i64::MIN))
                .contains("step=-9223372036854775808")
        );
        assert!(err(IntDistribution::new(i64::MIN, i64::MAX, true, 1)).contains("low >= 1"));
        assert!(err(IntDistribution::new(1, i64::MAX, true, i64::MAX)).contains("step must be 1"));
    }

    #[test]
    fn int_internal_values_are_exact_at_the_ends_of_i64() {
        let full = Distribution::Int(IntDistribution::new(i64::MIN, i64::MAX, false, 1).unwrap());
        for v in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX] {
            let internal = full.to_internal(&ParamValue::Int(v)).unwrap();
            assert!(full.contains(internal));
            // Beyond 2^53 neighbours share an f64; the value comes back as one of them.
            let ParamValue::Int(back) = full.to_external(internal) else {
                panic!("not an int")
            };
            assert_eq!(back as f64, v as f64);
        }
        assert_eq!(full.to_external(i64::MAX as f64), ParamValue::Int(i64::MAX));
        assert_eq!(full.to_external(i64::MIN as f64), ParamValue::Int(i64::MIN));
        assert!(full.contains(2f64.powi(63)) && full.contains(-(2f64.powi(63))));
        assert!(!full.contains(2f64.powi(64)) && !full.contains(-(2f64.powi(64))));
        assert!(!full.contains(f64::NAN) && !full.contains(f64::INFINITY) && !full.contains(0.5));

        let coarse =
            Distribution::Int(IntDistribution::new(i64::MIN, i64::MAX, false, 1 << 62).unwrap());
        for k in -2..=1i64 {
            let v = k * (1 << 62);
            let internal = coarse.to_internal(&ParamValue::Int(v)).unwrap();
            assert_eq!(coarse.to_external(internal), ParamValue::Int(v));
        }
        assert!(coarse.to_internal(&ParamValue::Int(i64::MAX)).is_err());
        assert!(coarse.to_internal(&ParamValue::Int(1)).is_err());
        assert!(!coarse.contains(2f64.powi(63)));

        let top =
            Distribution::Int(IntDistribution::new(i64::MAX - 1, i64::MAX, false, 1).unwrap());
        assert!(top.contains(2f64.powi(63)));
        assert!(!top.contains(2f64.powi(62)));
        assert_eq!(top.to_external(2f64.powi(63)), ParamValue::Int(i64::MAX));
        let bottom =
            Distribution::Int(IntDistribution::new(i64::MIN, i64::MIN + 1, false, 1).unwrap());
        assert!(bottom.contains(-(2f64.powi(63))));
        assert_eq!(
            bottom.to_external(-(2f64.powi(63))),
            ParamValue::Int(i64::MIN)
        );
        assert!(bottom.to_internal(&ParamValue::Int(i64::MIN + 1)).is_ok());

        // A grid whose values are not f64 integers: each still has an internal value that maps
        // back into the range.
        let odd = IntDistribution::new((1 << 60) + 1, (1 << 60) + 5, false, 2).unwrap();
        let dist = Distribution::Int(odd.clone());
        for v in [odd.low, odd.low + 2, odd.high] {
            let internal = dist.to_internal(&ParamValue::Int(v)).unwrap();
            let ParamValue::Int(back) = dist.to_external(internal) else {
                panic!("not an int")
            };
            assert!(odd.low <= back && back <= odd.high && (back - odd.low) % 2 == 0);
        }
        assert!(dist.to_internal(&ParamValue::Int(1 << 60)).is_err());
        assert!(dist.to_internal(&ParamValue::Int(odd.low + 1)).is_err());
        assert!(dist.contains(2f64.powi(60)));
        assert!(!dist.contains(2f64.powi(60) - 256.0));
        assert!(!dist.contains(2f64.powi(60) + 256.0));
    }

    #[test]
    fn int_nearest_grid_value_is_exact() {
        assert_eq!(
            IntDistribution::new(i64::MIN, i64::MAX, false, i64::MAX)
                .unwrap()
                .n_steps(),
            2
        );
        assert_eq!(
            IntDistribution::new(i64::MIN, i64::MAX, false, 1)
                .unwrap()
                .n_steps(),
            u64::MAX
        );
        assert_eq!(IntDistribution::new(7, 7, false, 3).unwrap().n_steps(), 0);
        let d = IntDistribution::new(i64::MIN, i64::MAX, false, 1).unwrap();
        assert_eq!(d.nearest(f64::INFINITY), i64::MAX);
        assert_eq!(d.nearest(2f64.powi(63)), i64::MAX);
        assert_eq!(d.nearest(1e300), i64::MAX);
        assert_eq!(d.nearest(-1e300), i64::MIN);
        assert_eq!(d.nearest(f64::NEG_INFINITY), i64::MIN);
        assert_eq!(d.nearest(2.4), 2);
        assert_eq!(d.nearest(-2.6), -3);
        let d = IntDistribution::new(i64::MIN, i64::MAX, false, 1 << 62).unwrap();
        assert_eq!(d.nearest(2f64.powi(63)), 1 << 62);
        assert_eq!(d.nearest(2f64.powi(61) - 1e3), 0);
        assert_eq!(d.nearest(2f64.powi(61) + 1e6), 1 << 62);
        assert_eq!(d.nearest(-(2f64.powi(62)) - 1e6), -(1 << 62));
        assert_eq!(d.value_at(0), i64::MIN);
        assert_eq!(d.value_at(3), 1 << 62);
        let d = IntDistribution::new(i64::MAX - 1, i64::MAX, false, 1).unwrap();
        assert_eq!(d.nearest(2f64.powi(63)), i64::MAX);
        assert_eq!(d.nearest(0.0), i64::MAX - 1);
        let d = IntDistribution::new(1, i64::MAX, true, 1).unwrap();
        assert_eq!(d.nearest(2f64.powi(63)), i64::MAX);
        assert_eq!(d.nearest(0.2), 1);
    }

    #[test]
    fn categorical_validation() {
        assert!(err(CategoricalDistribution::new(vec![])).contains("one or more"));
        let e = err(CategoricalDistribution::new(vec![
            ParamValue::Str("a".into()),
            ParamValue::Int(1),
            ParamValue::Str("a".into()),
        ]));
        assert!(e.contains("\"a\"") && e.contains("index 0 and 2"), "{e}");
        // 1 and 1.0 and true are different choices here (kinds are kept).
        CategoricalDistribution::new(vec![
            ParamValue::Int(1),
            ParamValue::Float(1.0),
            ParamValue::Bool(true),
        ])
        .unwrap();
    }

    #[test]
    fn internal_representation_round_trips() {
        let f = Distribution::Float(FloatDistribution::new(0.0, 1.0, false, Some(0.25)).unwrap());
        assert_eq!(f.to_internal(&ParamValue::Float(0.5)).unwrap(), 0.5);
        assert!(f.to_internal(&ParamValue::Float(0.3)).is_err());
        assert!(f.to_internal(&ParamValue::Float(1.5)).is_err());
        assert!(f.to_internal(&ParamValue::Str("x".into())).is_err());
        let i = Distribution::Int(IntDistribution::new(1, 9, false, 2).unwrap());
        assert_eq!(i.to_internal(&ParamValue::Int(5)).unwrap(), 5.0);
        assert!(i.to_internal(&ParamValue::Int(4)).is_err());
        assert_eq!(i.to_external(7.0), ParamValue::Int(7));
        let c = Distribution::Categorical(
            CategoricalDistribution::new(vec![ParamValue::None, ParamValue::Str("b".into())])
                .unwrap(),
        );
        assert_eq!(c.to_internal(&ParamValue::Str("b".into())).unwrap(), 1.0);
        assert_eq!(c.to_external(0.0), ParamValue::None);
        assert!(c.to_internal(&ParamValue::Str("z".into())).is_err());
        assert!(!c.contains(2.0) && !c.contains(-1.0) && !c.contains(0.5));
    }

    #[test]
    fn json_matches_optuna_form_and_round_trips() {
        let f = Distribution::Float(FloatDistribution::new(1e-5, 0.1, true, None).unwrap());
        let v: Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["name"], "FloatDistribution");
        assert_eq!(v["attributes"]["step"], Value::Null);
        assert_eq!(v["attributes"]["log"], true);
        assert_eq!(Distribution::from_json(&f.to_json()).unwrap(), f);
        let i = Distribution::Int(IntDistribution::new(0, 10, false, 2).unwrap());
        assert_eq!(
            i.to_json(),
            r#"{"attributes":{"high":10,"log":false,"low":0,"step":2},"name":"IntDistribution"}"#
        );
        assert_eq!(Distribution::from_json(&i.to_json()).unwrap(), i);
        let c = Distribution::Categorical(
            CategoricalDistribution::new(vec![
                ParamValue::None,
                ParamValue::Bool(true),
                ParamValue::Int(3),
                ParamValue::Float(2.5),
                ParamValue::Str("relu".into()),
            ])
            .unwrap(),
        );
        assert_eq!(Distribution::from_json(&c.to_json()).unwrap(), c);
        // Strings Optuna writes (with spaces) and legacy names parse too.
        let optuna = r#"{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.0, "high": 1.0, "log": false}}"#;
        assert_eq!(
            Distribution::from_json(optuna).unwrap(),
            Distribution::Float(FloatDistribution::new(0.0, 1.0, false, None).unwrap())
        );
        let legacy =
            r#"{"name": "IntUniformDistribution", "attributes": {"low": 1, "high": 5, "step": 1}}"#;
        assert_eq!(
            Distribution::from_json(legacy).unwrap(),
            Distribution::Int(IntDistribution::new(1, 5, false, 1).unwrap())
        );
        assert!(Distribution::from_json("{").is_err());
        assert!(
            Distribution::from_json(r#"{"name": "Nope", "attributes": {}}"#)
                .unwrap_err()
                .to_string()
                .contains("Nope")
        );
        assert!(Distribution::from_json(
            r#"{"name": "IntDistribution", "attributes": {"low": 3, "high": 1}}"#
        )
        .is_err());
    }
}
