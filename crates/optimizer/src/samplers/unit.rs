//! Parameters as coordinates of the unit cube, for the samplers that search a continuous box
//! (GP, CMA-ES): log scale for log parameters, the range mapped to [0, 1], a categorical
//! parameter as its choice index (compared by equality, not scaled).

use crate::distributions::Distribution;

/// How one parameter maps to [0, 1].
#[derive(Debug, Clone)]
pub(crate) struct UnitParam {
    pub name: String,
    pub dist: Distribution,
    /// The transformed range (log for log parameters), widened by half a step at each end for
    /// a grid when asked for (then every grid value owns an equal share of [0, 1]).
    lo: f64,
    hi: f64,
    log: bool,
}

impl UnitParam {
    /// `widen`: widen a grid's range by half a step at each end.
    pub fn new(name: &str, dist: &Distribution, widen: bool) -> Self {
        let half = |step: f64| if widen { step / 2.0 } else { 0.0 };
        let (lo, hi, log) = match dist {
            Distribution::Float(d) => {
                let h = half(d.step.unwrap_or(0.0));
                (d.low - h, d.high + h, d.log)
            }
            Distribution::Int(d) => {
                let h = half(d.step as f64);
                (d.low as f64 - h, d.high as f64 + h, d.log)
            }
            Distribution::Categorical(d) => (0.0, d.choices.len() as f64, false),
        };
        let (lo, hi) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
        UnitParam {
            name: name.to_string(),
            dist: dist.clone(),
            lo,
            hi,
            log,
        }
    }

    /// The transformed range (log scale for log parameters, widened as asked for).
    pub fn bounds(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// An internal value on the transformed scale (its log for a log parameter).
    pub fn transform(&self, v: f64) -> f64 {
        if self.log {
            v.ln()
        } else {
            v
        }
    }

    /// The internal value at a point of the transformed scale (clipped to the range, the
    /// nearest on the grid).
    pub fn untransform(&self, t: f64) -> f64 {
        if self.hi > self.lo {
            self.denormalize((t - self.lo) / (self.hi - self.lo))
        } else {
            self.denormalize(0.5)
        }
    }

    /// An internal value's coordinate.
    pub fn normalize(&self, v: f64) -> f64 {
        if let Distribution::Categorical(_) = self.dist {
            return v;
        }
        let t = self.transform(v);
        if self.hi > self.lo {
            (t - self.lo) / (self.hi - self.lo)
        } else {
            0.5
        }
    }

    /// The internal value at a coordinate (the nearest on the grid, in range).
    pub fn denormalize(&self, x: f64) -> f64 {
        let t = self.lo + x.clamp(0.0, 1.0) * (self.hi - self.lo);
        let v = if self.log { t.exp() } else { t };
        match &self.dist {
            Distribution::Float(d) => match d.step {
                Some(step) => {
                    let k = ((v - d.low) / step).round().max(0.0);
                    (d.low + k * step).min(d.high)
                }
                None => v.clamp(d.low, d.high),
            },
            Distribution::Int(d) => d.nearest(v) as f64,
            Distribution::Categorical(d) => x.round().clamp(0.0, (d.choices.len() - 1) as f64),
        }
    }
}
