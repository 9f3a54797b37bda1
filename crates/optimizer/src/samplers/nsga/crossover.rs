//! The crossovers and the mutation of the genetic samplers, on the numeric parameters'
//! transformed scale (log scale for log parameters, a grid's range widened by half a step).

use rand::rngs::SmallRng;
use rand::RngExt;

use crate::rng::standard_normal;

/// How a child's numeric parameters are made from its parents' (Optuna's crossover classes).
#[derive(Debug, Clone, PartialEq)]
pub enum Crossover {
    /// Each parameter from one of two parents.
    Uniform {
        /// Probability of the first parent (None: the sampler's `swapping_prob`).
        swapping_prob: Option<f64>,
    },
    /// Blend crossover: uniform in the parents' interval widened on each side.
    BlxAlpha {
        /// The widening, in widths of the interval.
        alpha: f64,
    },
    /// Simulated binary crossover, bounded by the ranges.
    Sbx {
        /// Distribution index (None: 2 for one objective, 20 for several).
        eta: Option<f64>,
        /// Probability that a pair of genes is swapped.
        uniform_crossover_prob: f64,
        /// Probability that a gene is the crossover's (else the parents').
        use_child_gene_prob: f64,
    },
    /// Vector-wise simulated binary crossover (unbounded).
    Vsbx {
        /// Distribution index (None: 2 for one objective, 20 for several).
        eta: Option<f64>,
        /// Probability that a pair of genes is swapped.
        uniform_crossover_prob: f64,
        /// Probability that a gene is the crossover's (else the parents').
        use_child_gene_prob: f64,
    },
    /// Unimodal normal distribution crossover of three parents: around the first two's middle
    /// along their difference, and across it scaled by the third's distance from their line.
    Undx {
        /// Spread along the difference.
        sigma_xi: f64,
        /// Spread across it (None: 0.35 / sqrt(n)).
        sigma_eta: Option<f64>,
    },
    /// Simplex crossover of three parents.
    Spx {
        /// Expansion of the parents' simplex (None: sqrt(n + 2)).
        epsilon: Option<f64>,
    },
}

impl Crossover {
    /// How many parents a child has.
    pub fn n_parents(&self) -> usize {
        match self {
            Crossover::Undx { .. } | Crossover::Spx { .. } => 3,
            _ => 2,
        }
    }

    /// Checks the arguments as Optuna does.
    pub fn validate(&self) -> Result<(), (&'static str, String, &'static str)> {
        let prob = |name, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err((name, p.to_string(), "must be within [0, 1]"))
            }
        };
        let eta = |e: Option<f64>| match e {
            Some(e) if !(e >= 0.0 && e.is_finite()) => {
                Err(("eta", e.to_string(), "must be a finite number >= 0"))
            }
            _ => Ok(()),
        };
        match *self {
            Crossover::Uniform { swapping_prob } => {
                swapping_prob.map_or(Ok(()), |p| prob("swapping_prob", p))
            }
            Crossover::BlxAlpha { alpha } if !alpha.is_finite() => {
                Err(("alpha", alpha.to_string(), "must be a finite number"))
            }
            Crossover::BlxAlpha { .. } => Ok(()),
            Crossover::Sbx {
                eta: e,
                uniform_crossover_prob,
                use_child_gene_prob,
            }
            | Crossover::Vsbx {
                eta: e,
                uniform_crossover_prob,
                use_child_gene_prob,
            } => {
                eta(e)?;
                prob("uniform_crossover_prob", uniform_crossover_prob)?;
                if use_child_gene_prob > 0.0 && use_child_gene_prob <= 1.0 {
                    Ok(())
                } else {
                    Err((
                        "use_child_gene_prob",
                        use_child_gene_prob.to_string(),
                        "must be within (0, 1]",
                    ))
                }
            }
            Crossover::Undx {
                sigma_xi,
                sigma_eta,
            } => {
                if !sigma_xi.is_finite() || sigma_eta.is_some_and(|s| !s.is_finite()) {
                    Err((
                        "sigma_xi",
                        format!("{sigma_xi}, sigma_eta={sigma_eta:?}"),
                        "must be finite numbers",
                    ))
                } else {
                    Ok(())
                }
            }
            Crossover::Spx { epsilon } => match epsilon {
                Some(e) if !e.is_finite() => {
                    Err(("epsilon", e.to_string(), "must be a finite number"))
                }
                _ => Ok(()),
            },
        }
    }

    /// A child of `parents` (each a point on the transformed scale), within `bounds` where the
    /// operator is bounded; the caller clips what is not.
    pub fn child(
        &self,
        parents: &[Vec<f64>],
        bounds: &[(f64, f64)],
        swapping_prob: f64,
        multi_objective: bool,
        rng: &mut SmallRng,
    ) -> Vec<f64> {
        let n = bounds.len();
        let (p0, p1) = (&parents[0], &parents[1]);
        let default_eta = if multi_objective { 20.0 } else { 2.0 };
        match *self {
            Crossover::Uniform { swapping_prob: p } => {
                let p = p.unwrap_or(swapping_prob);
                (0..n)
                    .map(|i| {
                        if rng.random::<f64>() >= p {
                            p1[i]
                        } else {
                            p0[i]
                        }
                    })
                    .collect()
            }
            Crossover::BlxAlpha { alpha } => (0..n)
                .map(|i| {
                    let (lo, hi) = (p0[i].min(p1[i]), p0[i].max(p1[i]));
                    let d = alpha * (hi - lo);
                    (lo - d) + rng.random::<f64>() * (hi - lo + 2.0 * d)
                })
                .collect(),
            Crossover::Sbx {
                eta,
                uniform_crossover_prob,
                use_child_gene_prob,
            } => {
                let eta = eta.unwrap_or(default_eta);
                let e = 1.0 / (eta + 1.0);
                let spread = |u: f64, alpha: f64| {
                    if u > 1.0 / alpha {
                        (1.0 / (2.0 - u * alpha)).powf(e)
                    } else {
                        (u * alpha).powf(e)
                    }
                };
                let pairs: Vec<(f64, f64)> = (0..n)
                    .map(|i| {
                        let (xl, xu) = bounds[i];
                        let (lo, hi) = (p0[i].min(p1[i]), p0[i].max(p1[i]));
                        let diff = (hi - lo).max(1e-10);
                        let alpha1 = 2.0 - (1.0 + 2.0 * (lo - xl) / diff).powf(-(eta + 1.0));
                        let alpha2 = 2.0 - (1.0 + 2.0 * (xu - hi) / diff).powf(-(eta + 1.0));
                        let u: f64 = rng.random();
                        let c1 = 0.5 * (lo + hi - spread(u, alpha1) * diff);
                        let c2 = 0.5 * (lo + hi + spread(u, alpha2) * diff);
                        (c1, c2)
                    })
                    .collect();
                mix(
                    &pairs,
                    p0,
                    p1,
                    uniform_crossover_prob,
                    use_child_gene_prob,
                    rng,
                )
            }
            Crossover::Vsbx {
                eta,
                uniform_crossover_prob,
                use_child_gene_prob,
            } => {
                let eta = eta.unwrap_or(default_eta);
                let e = 1.0 / (eta + 1.0);
                let betas: Vec<(f64, f64)> = (0..n)
                    .map(|_| {
                        let u: f64 = rng.random();
                        (
                            (1.0 / (2.0 * u).max(1e-10)).powf(e),
                            (1.0 / (2.0 * (1.0 - u)).max(1e-10)).powf(e),
                        )
                    })
                    .collect();
                let first = rng.random::<f64>() <= 0.5;
                let second = rng.random::<f64>() <= 0.5;
                let pairs: Vec<(f64, f64)> = (0..n)
                    .map(|i| {
                        let (b1, b2) = betas[i];
                        let c1 = if first {
                            0.5 * ((1.0 + b1) * p0[i] + (1.0 - b2) * p1[i])
                        } else {
                            0.5 * ((1.0 - b1) * p0[i] + (1.0 + b2) * p1[i])
                        };
                        let c2 = if second {
                            0.5 * ((3.0 - b1) * p0[i] - (1.0 - b2) * p1[i])
                        } else {
                            0.5 * (-(1.0 - b1) * p0[i] + (3.0 - b2) * p1[i])
                        };
                        (c1, c2)
                    })
                    .collect();
                mix(
                    &pairs,
                    p0,
                    p1,
                    uniform_crossover_prob,
                    use_child_gene_prob,
                    rng,
                )
            }
            Crossover::Undx {
                sigma_xi,
                sigma_eta,
            } => {
                let p2 = &parents[2];
                let sigma_eta = sigma_eta.unwrap_or(0.35 / (n as f64).sqrt());
                let d: Vec<f64> = (0..n).map(|i| p0[i] - p1[i]).collect();
                let xi = sigma_xi * standard_normal(rng);
                let mut child: Vec<f64> =
                    (0..n).map(|i| (p0[i] + p1[i]) / 2.0 + xi * d[i]).collect();
                if n > 1 {
                    // The unit vector from the first parent to the second, and the third's
                    // distance from the line through them.
                    let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-10);
                    let e12: Vec<f64> = d.iter().map(|x| -x / norm).collect();
                    let v13: Vec<f64> = (0..n).map(|i| p2[i] - p0[i]).collect();
                    let along = dot(&v13, &e12);
                    let dist = (0..n)
                        .map(|i| (v13[i] - along * e12[i]).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    for b in orthonormal_complement(&e12) {
                        let eta = sigma_eta * standard_normal(rng) * dist;
                        for (c, x) in child.iter_mut().zip(&b) {
                            *c += eta * x;
                        }
                    }
                }
                child
            }
            Crossover::Spx { epsilon } => {
                let k = parents.len();
                let eps = epsilon.unwrap_or(((n + 2) as f64).sqrt());
                let g: Vec<f64> = (0..n)
                    .map(|i| parents.iter().map(|p| p[i]).sum::<f64>() / k as f64)
                    .collect();
                let xs: Vec<Vec<f64>> = parents
                    .iter()
                    .map(|p| (0..n).map(|i| g[i] + eps * (p[i] - g[i])).collect())
                    .collect();
                let mut c = vec![0.0; n];
                for j in 1..k {
                    let r = rng.random::<f64>().powf(1.0 / j as f64);
                    for i in 0..n {
                        c[i] = r * (xs[j - 1][i] - xs[j][i] + c[i]);
                    }
                }
                (0..n).map(|i| xs[k - 1][i] + c[i]).collect()
            }
        }
    }
}

/// SBX/VSBX: per parameter, the pair of child genes or the parents' genes (with probability
/// `1 - use_child_gene_prob`), each pair in either order; then one of the two children.
fn mix(
    pairs: &[(f64, f64)],
    p0: &[f64],
    p1: &[f64],
    uniform_crossover_prob: f64,
    use_child_gene_prob: f64,
    rng: &mut SmallRng,
) -> Vec<f64> {
    let genes: Vec<(f64, f64)> = pairs
        .iter()
        .enumerate()
        .map(|(i, &(c1, c2))| {
            let (a, b) = if rng.random::<f64>() < use_child_gene_prob {
                (c1, c2)
            } else {
                (p0[i], p1[i])
            };
            if rng.random::<f64>() >= uniform_crossover_prob {
                (a, b)
            } else {
                (b, a)
            }
        })
        .collect();
    let first = rng.random::<f64>() < 0.5;
    genes
        .into_iter()
        .map(|(a, b)| if first { a } else { b })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// An orthonormal basis of the directions perpendicular to the unit vector `e` (Gram–Schmidt
/// over the axes; every axis when `e` is zero).
fn orthonormal_complement(e: &[f64]) -> Vec<Vec<f64>> {
    let n = e.len();
    let zero = e.iter().all(|&x| x == 0.0);
    let mut basis: Vec<Vec<f64>> = if zero { Vec::new() } else { vec![e.to_vec()] };
    for axis in 0..n {
        if basis.len() == n {
            break;
        }
        let mut v: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i == axis))).collect();
        for b in &basis {
            let p = dot(&v, b);
            for (x, y) in v.iter_mut().zip(b) {
                *x -= p * y;
            }
        }
        let norm = dot(&v, &v).sqrt();
        if norm > 1e-8 {
            basis.push(v.into_iter().map(|x| x / norm).collect());
        }
    }
    if zero {
        basis.truncate(n - 1);
        basis
    } else {
        basis.split_off(1)
    }
}

/// Polynomial mutation with distribution index `eta` of a value within `(lo, hi)`, clipped to
/// it.
pub fn polynomial_mutation(x: f64, (lo, hi): (f64, f64), eta: f64, rng: &mut SmallRng) -> f64 {
    let width = hi - lo;
    if width <= 0.0 {
        return x;
    }
    let u: f64 = rng.random();
    let power = 1.0 / (eta + 1.0);
    let delta = if u <= 0.5 {
        let xy = 1.0 - (x - lo) / width;
        (2.0 * u + (1.0 - 2.0 * u) * xy.powf(eta + 1.0)).powf(power) - 1.0
    } else {
        let xy = 1.0 - (hi - x) / width;
        1.0 - (2.0 * (1.0 - u) + 2.0 * (u - 0.5) * xy.powf(eta + 1.0)).powf(power)
    };
    (x + delta * width).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    #[test]
    fn uniform_and_blx_stay_where_they_should() {
        let parents = vec![vec![0.0, 1.0, 2.0], vec![1.0, 3.0, 2.0]];
        let b = [(0.0, 10.0); 3];
        let mut r = rng();
        for _ in 0..200 {
            let c = Crossover::Uniform {
                swapping_prob: None,
            }
            .child(&parents, &b, 0.5, false, &mut r);
            for i in 0..3 {
                assert!(c[i] == parents[0][i] || c[i] == parents[1][i]);
            }
            let c = Crossover::BlxAlpha { alpha: 0.5 }.child(&parents, &b, 0.5, false, &mut r);
            assert!((-0.5..=1.5).contains(&c[0]) && (0.0..=4.0).contains(&c[1]));
            assert_eq!(c[2], 2.0);
        }
        // swapping_prob = 1: always the first parent.
        let c = Crossover::Uniform {
            swapping_prob: Some(1.0),
        }
        .child(&parents, &b, 0.5, false, &mut r);
        assert_eq!(c, parents[0]);
    }

    #[test]
    fn sbx_children_concentrate_around_the_parents_and_respect_the_bounds() {
        let parents = vec![vec![0.3], vec![0.5]];
        let b = [(0.0, 1.0)];
        let mut r = rng();
        let xo = Crossover::Sbx {
            eta: Some(20.0),
            uniform_crossover_prob: 0.5,
            use_child_gene_prob: 1.0,
        };
        let kids: Vec<f64> = (0..2000)
            .map(|_| xo.child(&parents, &b, 0.5, true, &mut r)[0])
            .collect();
        assert!(kids.iter().all(|&k| (0.0..=1.0).contains(&k)));
        let near = kids
            .iter()
            .filter(|&&k| (k - 0.3).abs() < 0.05 || (k - 0.5).abs() < 0.05)
            .count();
        assert!(near > 1600, "{near} of 2000 near a parent");
    }

    #[test]
    fn vsbx_is_symmetric_around_the_parents() {
        let parents = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        let b = [(-10.0, 10.0); 2];
        let xo = Crossover::Vsbx {
            eta: None,
            uniform_crossover_prob: 0.5,
            use_child_gene_prob: 1.0,
        };
        let mut r = rng();
        let kids: Vec<Vec<f64>> = (0..4000)
            .map(|_| xo.child(&parents, &b, 0.5, false, &mut r))
            .collect();
        let mean0 = kids.iter().map(|k| k[0]).sum::<f64>() / kids.len() as f64;
        assert!((mean0 - 0.5).abs() < 0.15, "mean {mean0}");
    }

    #[test]
    fn undx_centres_on_the_first_two_parents_and_spreads_across_their_line() {
        let parents = vec![
            vec![0.0, 0.0, 0.0],
            vec![2.0, 0.0, 0.0],
            vec![1.0, 1.0, 0.0],
        ];
        let b = [(-10.0, 10.0); 3];
        let xo = Crossover::Undx {
            sigma_xi: 0.5,
            sigma_eta: None,
        };
        let mut r = rng();
        let kids: Vec<Vec<f64>> = (0..4000)
            .map(|_| xo.child(&parents, &b, 0.5, false, &mut r))
            .collect();
        let mean = |i: usize| kids.iter().map(|k| k[i]).sum::<f64>() / kids.len() as f64;
        assert!((mean(0) - 1.0).abs() < 0.05 && mean(1).abs() < 0.05 && mean(2).abs() < 0.05);
        let var = |i: usize| {
            kids.iter().map(|k| (k[i] - mean(i)).powi(2)).sum::<f64>() / kids.len() as f64
        };
        // Along the line: (0.5 * 2)^2 = 1; across it: (0.35 / sqrt(3))^2 * 1 ≈ 0.041 per axis.
        assert!((var(0) - 1.0).abs() < 0.1, "{}", var(0));
        assert!(
            (var(1) - 0.0408).abs() < 0.01 && (var(2) - 0.0408).abs() < 0.01,
            "{} {}",
            var(1),
            var(2)
        );
    }

    #[test]
    fn spx_children_lie_in_the_expanded_simplex() {
        let parents = vec![vec![0.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]];
        let b = [(-10.0, 10.0); 2];
        let xo = Crossover::Spx { epsilon: Some(1.0) };
        let mut r = rng();
        for _ in 0..500 {
            let c = xo.child(&parents, &b, 0.5, false, &mut r);
            // epsilon = 1: the simplex itself.
            assert!(
                c[0] >= -1e-12 && c[1] >= -1e-12 && c[0] + c[1] <= 1.0 + 1e-12,
                "{c:?}"
            );
        }
    }

    #[test]
    fn the_complement_is_orthonormal_and_perpendicular() {
        let s = 1.0 / 3f64.sqrt();
        let e = [s, s, s];
        let basis = orthonormal_complement(&e);
        assert_eq!(basis.len(), 2);
        for (i, b) in basis.iter().enumerate() {
            assert!(dot(b, &e).abs() < 1e-12);
            assert!((dot(b, b) - 1.0).abs() < 1e-12);
            for c in &basis[i + 1..] {
                assert!(dot(b, c).abs() < 1e-12);
            }
        }
        assert_eq!(orthonormal_complement(&[0.0, 0.0]).len(), 1);
    }

    #[test]
    fn polynomial_mutation_stays_in_range_and_near_the_value() {
        let mut r = rng();
        let xs: Vec<f64> = (0..2000)
            .map(|_| polynomial_mutation(0.5, (0.0, 1.0), 20.0, &mut r))
            .collect();
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
        let mean_gap = xs.iter().map(|x| (x - 0.5).abs()).sum::<f64>() / xs.len() as f64;
        assert!(mean_gap < 0.05 && mean_gap > 0.0, "{mean_gap}");
        assert_eq!(polynomial_mutation(0.3, (1.0, 1.0), 20.0, &mut r), 0.3);
    }
}
