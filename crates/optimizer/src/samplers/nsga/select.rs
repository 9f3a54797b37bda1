//! Elite selection: which trials of a generation and its parents become the next parents.
//! Non-dominated fronts (feasible trials first, then the infeasible ones by total violation)
//! fill the population; the front that does not fit is cut by crowding distance (NSGA-II) or
//! by niches around reference directions (NSGA-III).

use std::collections::BTreeMap;

use nalgebra::{DMatrix, DVector};
use rand::rngs::SmallRng;
use rand::RngExt;

use crate::multi_objective::{dominates, non_domination_ranks};

/// A finished trial as the selection sees it.
#[derive(Debug, Clone)]
pub(crate) struct Individual {
    pub number: u64,
    /// One loss per objective (smaller is better).
    pub loss: Vec<f64>,
    /// The sum of its positive constraint values (0 when feasible or without constraints).
    pub penalty: f64,
}

impl Individual {
    /// Whether `self` beats `other` in a tournament: constrained domination when the study
    /// has constraints (feasible first, then less violation), else Pareto domination.
    pub fn dominates(&self, other: &Individual, constrained: bool) -> bool {
        if constrained {
            match (self.penalty > 0.0, other.penalty > 0.0) {
                (false, true) => return true,
                (true, false) => return false,
                (true, true) => return self.penalty < other.penalty,
                (false, false) => {}
            }
        }
        dominates(&self.loss, &other.loss)
    }
}

/// How the front that does not fit whole is cut.
#[derive(Debug, Clone, PartialEq)]
pub enum Niching {
    /// NSGA-II: the least crowded first.
    Crowding,
    /// NSGA-III: evenly over these reference directions (one per row, a weight per objective).
    ReferencePoints(Vec<Vec<f64>>),
}

/// The fronts of `pop` as indices, best first.
fn fronts(pop: &[Individual], constrained: bool) -> Vec<Vec<usize>> {
    let feasible: Vec<usize> = (0..pop.len())
        .filter(|&i| !constrained || pop[i].penalty <= 0.0)
        .collect();
    let losses: Vec<Vec<f64>> = feasible.iter().map(|&i| pop[i].loss.clone()).collect();
    let ranks = non_domination_ranks(&losses, None);
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (k, &r) in ranks.iter().enumerate() {
        if out.len() <= r {
            out.resize(r + 1, Vec::new());
        }
        out[r].push(feasible[k]);
    }
    let mut infeasible: Vec<usize> = (0..pop.len())
        .filter(|&i| constrained && pop[i].penalty > 0.0)
        .collect();
    infeasible.sort_by(|&a, &b| pop[a].penalty.total_cmp(&pop[b].penalty).then(a.cmp(&b)));
    for (k, &i) in infeasible.iter().enumerate() {
        if k == 0 || pop[i].penalty != pop[infeasible[k - 1]].penalty {
            out.push(Vec::new());
        }
        out.last_mut().expect("pushed above").push(i);
    }
    out
}

/// Selects `size` of `pop` (indices, in selection order).
pub(crate) fn elite(
    pop: &[Individual],
    size: usize,
    niching: &Niching,
    constrained: bool,
    rng: &mut SmallRng,
) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(size);
    for front in fronts(pop, constrained) {
        if chosen.len() + front.len() < size {
            chosen.extend(front);
            continue;
        }
        let need = size - chosen.len();
        let extra = match niching {
            Niching::Crowding => {
                let d = crowding_distances(pop, &front);
                let mut order: Vec<usize> = (0..front.len()).collect();
                order.sort_by(|&a, &b| d[b].total_cmp(&d[a]).then(front[a].cmp(&front[b])));
                order.into_iter().take(need).map(|k| front[k]).collect()
            }
            Niching::ReferencePoints(refs) => niche(pop, &chosen, &front, need, refs, rng),
        };
        chosen.extend(extra);
        break;
    }
    chosen
}

/// Each member's crowding distance in `front`: the sum over objectives of the gap between its
/// neighbours, relative to the front's extent (infinite at the ends).
fn crowding_distances(pop: &[Individual], front: &[usize]) -> Vec<f64> {
    let mut d = vec![0.0; front.len()];
    let n_obj = pop[front[0]].loss.len();
    for m in 0..n_obj {
        let v = |k: usize| pop[front[k]].loss[m];
        let mut order: Vec<usize> = (0..front.len()).collect();
        order.sort_by(|&a, &b| v(a).total_cmp(&v(b)));
        let (lo, hi) = (v(order[0]), v(order[order.len() - 1]));
        if lo == hi {
            continue;
        }
        let width = if hi - lo > 0.0 && (hi - lo).is_finite() {
            hi - lo
        } else {
            1.0
        };
        for j in 0..order.len() {
            let prev = if j == 0 {
                f64::NEG_INFINITY
            } else {
                v(order[j - 1])
            };
            let next = if j + 1 == order.len() {
                f64::INFINITY
            } else {
                v(order[j + 1])
            };
            if prev != next {
                d[order[j]] += (next - prev) / width;
            }
        }
    }
    d
}

/// Das and Dennis's reference directions: the points of the simplex whose coordinates are
/// multiples of 1/`divisions` (as counts summing to `divisions`).
pub fn default_reference_points(n_obj: usize, divisions: usize) -> Vec<Vec<f64>> {
    fn rec(left: usize, dims: usize, prefix: &mut Vec<f64>, out: &mut Vec<Vec<f64>>) {
        if dims == 1 {
            prefix.push(left as f64);
            out.push(prefix.clone());
            prefix.pop();
            return;
        }
        for k in (0..=left).rev() {
            prefix.push(k as f64);
            rec(left - k, dims - 1, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    if n_obj > 0 {
        rec(divisions, n_obj, &mut Vec::new(), &mut out);
    }
    out
}

/// The losses of `members`, translated so each objective's minimum is 0 and scaled by the
/// intercepts of the hyperplane through the extreme points (by the maxima when it is
/// degenerate). Infinite losses are first clipped to 3 extents beyond the finite ones.
fn normalized(pop: &[Individual], members: &[usize]) -> Vec<Vec<f64>> {
    let m = pop[members[0]].loss.len();
    let mut f: Vec<Vec<f64>> = members.iter().map(|&i| pop[i].loss.clone()).collect();
    for k in 0..m {
        let finite = f.iter().map(|r| r[k]).filter(|x| x.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        let margin = 3.0 * (hi - lo);
        let min = f
            .iter()
            .map(|r| r[k].clamp(lo - margin, hi + margin))
            .fold(f64::INFINITY, f64::min);
        for r in &mut f {
            r[k] = r[k].clamp(lo - margin, hi + margin) - min;
        }
    }
    // The extreme point of each axis minimises the achievement scalarising function whose
    // weight is 1 on that axis and 1e6 elsewhere.
    let extremes: Vec<&Vec<f64>> = (0..m)
        .map(|axis| {
            let asf = |r: &Vec<f64>| {
                (0..m)
                    .map(|k| r[k] * if k == axis { 1.0 } else { 1e6 })
                    .fold(f64::NEG_INFINITY, f64::max)
            };
            f.iter()
                .min_by(|a, b| asf(a).total_cmp(&asf(b)))
                .expect("members is not empty")
        })
        .collect();
    let e = DMatrix::from_fn(m, m, |i, j| extremes[i][j]);
    let inv = e
        .lu()
        .solve(&DVector::from_element(m, 1.0))
        .filter(|x| x.iter().all(|v| v.is_finite() && *v > 0.0))
        .map(|x| x.iter().copied().collect::<Vec<f64>>())
        .unwrap_or_else(|| {
            (0..m)
                .map(|k| {
                    let max = f.iter().map(|r| r[k]).fold(0.0, f64::max);
                    if max > 0.0 {
                        1.0 / max
                    } else {
                        1.0
                    }
                })
                .collect()
        });
    for r in &mut f {
        for k in 0..m {
            r[k] *= inv[k];
        }
    }
    f
}

/// NSGA-III niching: `need` members of `front`, each time from the reference direction with
/// the fewest selected members so far (ties at random); an empty niche takes its closest
/// candidate, another a random one.
fn niche(
    pop: &[Individual],
    chosen: &[usize],
    front: &[usize],
    need: usize,
    refs: &[Vec<f64>],
    rng: &mut SmallRng,
) -> Vec<usize> {
    let all: Vec<usize> = chosen.iter().chain(front).copied().collect();
    let f = normalized(pop, &all);
    // The closest reference line of every member, and the distance to it.
    let assoc: Vec<(usize, f64)> = f
        .iter()
        .map(|x| {
            refs.iter()
                .enumerate()
                .map(|(j, r)| {
                    let rr: f64 = r.iter().map(|v| v * v).sum();
                    let t = x.iter().zip(r).map(|(a, b)| a * b).sum::<f64>() / rr;
                    let d2: f64 = x.iter().zip(r).map(|(a, b)| (a - t * b).powi(2)).sum();
                    (j, d2.sqrt())
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("at least one reference point")
        })
        .collect();
    let mut count = vec![0usize; refs.len()];
    for &(j, _) in &assoc[..chosen.len()] {
        count[j] += 1;
    }
    // Candidates of the front per reference direction: (distance, index into `front`).
    let mut cands: BTreeMap<usize, Vec<(f64, usize)>> = BTreeMap::new();
    for (k, &(j, d)) in assoc[chosen.len()..].iter().enumerate() {
        cands.entry(j).or_default().push((d, k));
    }
    let mut out = Vec::with_capacity(need);
    while out.len() < need {
        let min = cands
            .keys()
            .map(|&j| count[j])
            .min()
            .expect("the front has enough members");
        let ties: Vec<usize> = cands.keys().copied().filter(|&j| count[j] == min).collect();
        let j = ties[rng.random_range(0..ties.len())];
        let list = cands.get_mut(&j).expect("a key");
        let pick = if count[j] == 0 {
            (0..list.len())
                .min_by(|&a, &b| {
                    list[a]
                        .0
                        .total_cmp(&list[b].0)
                        .then(list[a].1.cmp(&list[b].1))
                })
                .expect("not empty")
        } else {
            rng.random_range(0..list.len())
        };
        let (_, k) = list.swap_remove(pick);
        if list.is_empty() {
            cands.remove(&j);
        }
        count[j] += 1;
        out.push(front[k]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ind(number: u64, loss: &[f64], penalty: f64) -> Individual {
        Individual {
            number,
            loss: loss.to_vec(),
            penalty,
        }
    }

    #[test]
    fn fronts_put_feasible_trials_first_then_the_least_violating() {
        let pop = vec![
            ind(0, &[1.0, 1.0], 0.0),
            ind(1, &[0.0, 0.0], 2.0),
            ind(2, &[2.0, 2.0], 0.0),
            ind(3, &[0.0, 0.0], 1.0),
            ind(4, &[5.0, 5.0], 1.0),
        ];
        assert_eq!(
            fronts(&pop, true),
            vec![vec![0], vec![2], vec![3, 4], vec![1]]
        );
        assert_eq!(
            fronts(&pop, false),
            vec![vec![1, 3], vec![0], vec![2], vec![4]]
        );
        assert!(pop[3].dominates(&pop[1], true) && pop[0].dominates(&pop[3], true));
        assert!(!pop[0].dominates(&pop[3], false));
    }

    #[test]
    fn crowding_keeps_the_ends_and_the_sparse_middle() {
        // One front on a line: the ends are infinitely far from crowding; then 1 (its
        // neighbours 5 apart) before 2 (4.5 apart), and 3 and 4 are packed.
        let pts = [
            [0.0, 10.0],
            [1.0, 9.0],
            [5.0, 5.0],
            [5.5, 4.5],
            [5.6, 4.4],
            [10.0, 0.0],
        ];
        let pop: Vec<Individual> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| ind(i as u64, p, 0.0))
            .collect();
        let mut r = SmallRng::seed_from_u64(0);
        let mut got = elite(&pop, 3, &Niching::Crowding, false, &mut r);
        got.sort();
        assert_eq!(got, vec![0, 1, 5]);
        let mut got = elite(&pop, 4, &Niching::Crowding, false, &mut r);
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 5]);
    }

    #[test]
    fn das_dennis_points() {
        let p = default_reference_points(3, 3);
        assert_eq!(p.len(), 10);
        assert!(p.iter().all(|r| r.iter().sum::<f64>() == 3.0));
        assert_eq!(default_reference_points(2, 4).len(), 5);
    }

    #[test]
    fn reference_points_spread_the_selection_over_the_front() {
        // A front of many points crowded near one end of the line x + y = 1, a few elsewhere:
        // NSGA-III keeps one per direction before a second anywhere.
        let mut pts: Vec<[f64; 2]> = (0..20)
            .map(|i| [0.01 * i as f64, 1.0 - 0.01 * i as f64])
            .collect();
        pts.extend([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0], [0.25, 0.75]]);
        let pop: Vec<Individual> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| ind(i as u64, p, 0.0))
            .collect();
        let refs = default_reference_points(2, 4);
        let mut r = SmallRng::seed_from_u64(3);
        let got = elite(&pop, 5, &Niching::ReferencePoints(refs), false, &mut r);
        let mut got_pts: Vec<[f64; 2]> = got.iter().map(|&i| pts[i]).collect();
        got_pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
        assert_eq!(
            got_pts[1..],
            [[0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]],
            "{got_pts:?}"
        );
        assert!(got_pts[0][0] < 0.2);
    }

    #[test]
    fn normalization_maps_the_extremes_to_the_unit_intercepts() {
        let pop = vec![
            ind(0, &[1.0, 11.0], 0.0),
            ind(1, &[3.0, 10.0], 0.0),
            ind(2, &[2.0, 10.5], 0.0),
        ];
        let f = normalized(&pop, &[0, 1, 2]);
        assert!((f[0][0]).abs() < 1e-12 && (f[0][1] - 1.0).abs() < 1e-9);
        assert!((f[1][0] - 1.0).abs() < 1e-9 && f[1][1].abs() < 1e-12);
    }
}
