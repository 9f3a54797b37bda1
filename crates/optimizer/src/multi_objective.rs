//! Multi-objective helpers: Pareto dominance, non-dominated ranks, hypervolume and greedy
//! hypervolume subset selection. Points are losses (smaller is better in every objective).

/// True when `a` dominates `b`: no worse anywhere, strictly better somewhere.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut strictly = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            strictly = true;
        }
    }
    strictly
}

/// Non-domination rank of every point (0 = Pareto front). Ranks are only computed until at least
/// `n_below` points are ranked (when given); the rest get `usize::MAX`.
pub fn non_domination_ranks(points: &[Vec<f64>], n_below: Option<usize>) -> Vec<usize> {
    let n = points.len();
    let mut ranks = vec![usize::MAX; n];
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut rank = 0;
    let mut ranked = 0;
    while !remaining.is_empty() && n_below.is_none_or(|k| ranked < k) {
        let front: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                !remaining
                    .iter()
                    .any(|&j| j != i && dominates(&points[j], &points[i]))
            })
            .collect();
        for &i in &front {
            ranks[i] = rank;
        }
        ranked += front.len();
        remaining.retain(|i| ranks[*i] == usize::MAX);
        rank += 1;
    }
    ranks
}

/// Indices of the Pareto-optimal points (duplicates all kept).
pub fn pareto_front(points: &[Vec<f64>]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| !points.iter().any(|p| dominates(p, &points[i])))
        .collect()
}

/// Hypervolume dominated by `points` and bounded by `reference` (points not strictly better than
/// the reference in every objective contribute nothing).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let pts: Vec<Vec<f64>> = points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .cloned()
        .collect();
    hv_rec(pts, reference)
}

fn hv_rec(mut pts: Vec<Vec<f64>>, reference: &[f64]) -> f64 {
    let d = reference.len();
    if pts.is_empty() {
        return 0.0;
    }
    if d == 1 {
        return reference[0] - pts.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min);
    }
    if d == 2 {
        pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
        let mut hv = 0.0;
        let mut best_y = reference[1];
        for p in &pts {
            if p[1] < best_y {
                hv += (reference[0] - p[0]) * (best_y - p[1]);
                best_y = p[1];
            }
        }
        return hv;
    }
    // Slice along the last objective (HSO): sweep points sorted by it.
    pts.sort_by(|a, b| a[d - 1].total_cmp(&b[d - 1]));
    let mut hv = 0.0;
    for i in 0..pts.len() {
        let next = if i + 1 < pts.len() {
            pts[i + 1][d - 1]
        } else {
            reference[d - 1]
        };
        let depth = next - pts[i][d - 1];
        if depth <= 0.0 {
            continue;
        }
        let slice: Vec<Vec<f64>> = pts[..=i].iter().map(|p| p[..d - 1].to_vec()).collect();
        let front: Vec<Vec<f64>> = pareto_front(&slice)
            .into_iter()
            .map(|j| slice[j].clone())
            .collect();
        hv += depth * hv_rec(front, &reference[..d - 1]);
    }
    hv
}

/// Optuna's reference point: the worst point pushed out by 10%, zeros replaced by a tiny value.
pub fn reference_point(points: &[Vec<f64>]) -> Vec<f64> {
    let d = points.first().map_or(0, Vec::len);
    (0..d)
        .map(|k| {
            let worst = points
                .iter()
                .map(|p| p[k])
                .fold(f64::NEG_INFINITY, f64::max);
            let r = (1.1 * worst).max(0.9 * worst);
            if r == 0.0 {
                1e-12
            } else {
                r
            }
        })
        .collect()
}

/// Disjoint boxes `(lower, upper)` whose union is the region below `reference` that no point
/// of `points` weakly dominates: where a new point adds hypervolume. Lower corners may be
/// `-inf`. Built by slicing along the last objective at the points' values, each slice holding
/// the lower-dimensional region of the points below it; O(n^(d-1)) boxes for n points.
pub fn non_dominated_boxes(points: &[Vec<f64>], reference: &[f64]) -> Vec<(Vec<f64>, Vec<f64>)> {
    let d = reference.len();
    let mut out = Vec::new();
    if d == 0 {
        return out;
    }
    let inside: Vec<Vec<f64>> = points
        .iter()
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .cloned()
        .collect();
    let front: Vec<Vec<f64>> = pareto_front(&inside)
        .into_iter()
        .map(|i| inside[i].clone())
        .collect();
    if d == 1 {
        let top = front.iter().map(|p| p[0]).fold(reference[0], f64::min);
        out.push((vec![f64::NEG_INFINITY], vec![top]));
        return out;
    }
    let mut cuts: Vec<f64> = front.iter().map(|p| p[d - 1]).collect();
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    cuts.push(reference[d - 1]);
    let mut lo = f64::NEG_INFINITY;
    for hi in cuts {
        if hi > lo {
            // In this slice, the points at or below its bottom dominate it.
            let below: Vec<Vec<f64>> = front
                .iter()
                .filter(|p| p[d - 1] <= lo)
                .map(|p| p[..d - 1].to_vec())
                .collect();
            for (mut l, mut u) in non_dominated_boxes(&below, &reference[..d - 1]) {
                l.push(lo);
                u.push(hi);
                out.push((l, u));
            }
        }
        lo = hi;
    }
    out
}

/// Greedy hypervolume subset selection: picks `k` of `points` (returned as indices) that
/// together dominate as much volume as a greedy choice can.
pub fn hssp_greedy(points: &[Vec<f64>], k: usize, reference: &[f64]) -> Vec<usize> {
    let k = k.min(points.len());
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut chosen_pts: Vec<Vec<f64>> = Vec::with_capacity(k);
    let mut base = 0.0;
    while chosen.len() < k {
        let mut best = (f64::NEG_INFINITY, usize::MAX);
        for (i, p) in points.iter().enumerate() {
            if chosen.contains(&i) {
                continue;
            }
            chosen_pts.push(p.clone());
            let gain = hypervolume(&chosen_pts, reference) - base;
            chosen_pts.pop();
            if gain > best.0 {
                best = (gain, i);
            }
        }
        chosen.push(best.1);
        chosen_pts.push(points[best.1].clone());
        base = hypervolume(&chosen_pts, reference);
    }
    chosen
}

/// Which `k` of the loss vectors `losses` (to minimise) are best: whole non-domination ranks
/// while they fit, and the rank at the boundary tie-broken by greedy hypervolume subset
/// selection. The mask has `k` trues (all when `k` covers every point).
pub fn best_of(losses: &[Vec<f64>], k: usize) -> Vec<bool> {
    if k >= losses.len() {
        return vec![true; losses.len()];
    }
    let ranks = non_domination_ranks(losses, Some(k));
    let mut chosen = vec![false; losses.len()];
    let mut taken = 0;
    for r in 0.. {
        let members: Vec<usize> = (0..losses.len()).filter(|&i| ranks[i] == r).collect();
        if members.is_empty() || taken + members.len() > k {
            if taken < k && !members.is_empty() {
                let pts: Vec<Vec<f64>> = members.iter().map(|&i| losses[i].clone()).collect();
                let refp = reference_point(&pts);
                for j in hssp_greedy(&pts, k - taken, &refp) {
                    chosen[members[j]] = true;
                }
            }
            break;
        }
        for &i in &members {
            chosen[i] = true;
        }
        taken += members.len();
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_dominated_boxes_are_disjoint_and_fill_what_the_front_leaves() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for d in 1..=3 {
            for n in [0usize, 1, 5, 12] {
                let pts: Vec<Vec<f64>> = (0..n)
                    .map(|_| (0..d).map(|_| rng.random_range(0.0..1.0)).collect())
                    .collect();
                let reference = vec![1.2; d];
                let floor = -0.5;
                let clipped: Vec<(Vec<f64>, Vec<f64>)> = non_dominated_boxes(&pts, &reference)
                    .into_iter()
                    .map(|(l, u)| (l.iter().map(|v| v.max(floor)).collect(), u))
                    .collect();
                let volume = |l: &[f64], u: &[f64]| -> f64 {
                    l.iter().zip(u).map(|(a, b)| (b - a).max(0.0)).product()
                };
                let boxes: f64 = clipped.iter().map(|(l, u)| volume(l, u)).sum();
                let whole = (1.2f64 - floor).powi(d as i32);
                let hv = hypervolume(&pts, &reference);
                assert!(
                    (boxes + hv - whole).abs() < 1e-9,
                    "d={d} n={n}: {boxes} + {hv} != {whole}"
                );
                for (i, (la, ua)) in clipped.iter().enumerate() {
                    for (lb, ub) in &clipped[i + 1..] {
                        let l: Vec<f64> = la.iter().zip(lb).map(|(a, b)| a.max(*b)).collect();
                        let u: Vec<f64> = ua.iter().zip(ub).map(|(a, b)| a.min(*b)).collect();
                        assert!(volume(&l, &u) < 1e-12, "d={d} n={n}: boxes overlap");
                    }
                }
            }
        }
    }

    #[test]
    fn ranks_and_front() {
        let pts = vec![
            vec![1.0, 4.0],
            vec![2.0, 2.0],
            vec![3.0, 3.0],
            vec![4.0, 1.0],
            vec![5.0, 5.0],
        ];
        assert_eq!(non_domination_ranks(&pts, None), vec![0, 0, 1, 0, 2]);
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
        assert_eq!(
            non_domination_ranks(&pts, Some(3)),
            vec![0, 0, usize::MAX, 0, usize::MAX]
        );
    }

    #[test]
    fn hypervolume_known_values() {
        let pts = vec![vec![1.0, 2.0], vec![2.0, 1.0]];
        assert!((hypervolume(&pts, &[3.0, 3.0]) - 3.0).abs() < 1e-12);
        // 3-D: a single point is a box; two points overlap.
        assert!((hypervolume(&[vec![0.0, 0.0, 0.0]], &[1.0, 2.0, 3.0]) - 6.0).abs() < 1e-12);
        let two = vec![vec![0.0, 1.0, 0.0], vec![1.0, 0.0, 0.0]];
        // union of [0,2]x[1,2]x[0,2] and [1,2]x[0,2]x[0,2]: 4 + 4 - 2 = 6
        assert!((hypervolume(&two, &[2.0, 2.0, 2.0]) - 6.0).abs() < 1e-12);
        assert_eq!(hypervolume(&[vec![5.0, 0.0]], &[3.0, 3.0]), 0.0);
    }

    #[test]
    fn hssp_prefers_spread_points() {
        let pts = vec![
            vec![0.0, 3.0],
            vec![1.0, 1.0],
            vec![1.1, 1.1],
            vec![3.0, 0.0],
        ];
        let chosen = hssp_greedy(&pts, 1, &[4.0, 4.0]);
        assert_eq!(chosen, vec![1]);
        assert_eq!(hssp_greedy(&pts, 3, &[4.0, 4.0]).len(), 3);
    }

    #[test]
    fn best_of_takes_whole_fronts_then_breaks_the_tie_by_hypervolume() {
        // Front 0: (0,3) (1,1) (3,0); front 1: (2,2) dominated by (1,1); then (4,4).
        let pts = vec![
            vec![0.0, 3.0],
            vec![1.0, 1.0],
            vec![3.0, 0.0],
            vec![2.0, 2.0],
            vec![4.0, 4.0],
        ];
        assert_eq!(best_of(&pts, 4), vec![true, true, true, true, false]);
        assert_eq!(best_of(&pts, 9), vec![true; 5]);
        let two = best_of(&pts, 2);
        assert_eq!(two.iter().filter(|c| **c).count(), 2);
        assert!(!two[3] && !two[4]);
    }
}
