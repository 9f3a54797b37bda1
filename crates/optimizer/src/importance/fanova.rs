//! Functional ANOVA on a random forest (Hutter, Hoos and Leyton-Brown, ICML 2014).
//!
//! Each tree is a piecewise-constant function on the box of the search space. The importance of
//! a parameter (one feature, or the one-hot columns of a categorical parameter together) in one
//! tree is the variance of the tree's marginal over that parameter — the average over every
//! other feature, uniformly on the box — divided by the tree's total variance. The importance
//! is the mean of that fraction over the trees whose variance is not zero.
//!
//! Marginals are computed from the leaves directly: a leaf contributes its value, times the
//! share of the other features' box it covers, to the part of the parameter's range it spans.
//! For one feature that is a sweep over the tree's split points on it; for a group of features
//! the variance comes from the pairwise overlaps of the leaves in the group's coordinates.

use rayon::prelude::*;

use super::forest::{Forest, Tree};

/// A leaf of a tree, with its cell of the search space.
struct Cell {
    value: f64,
    /// Per feature, the cell's interval.
    bounds: Vec<(f64, f64)>,
    /// The cell's share of the whole box's volume.
    share: f64,
}

/// The leaves of `tree` with their cells in `space` (one (low, high) per feature).
fn cells(tree: &Tree, space: &[(f64, f64)]) -> Vec<Cell> {
    let mut out = Vec::new();
    let mut stack = vec![(0usize, space.to_vec())];
    while let Some((i, bounds)) = stack.pop() {
        let n = &tree.nodes[i];
        match n.feature {
            Some(f) => {
                let mut left = bounds.clone();
                let mut right = bounds;
                left[f].1 = n.threshold.min(left[f].1);
                right[f].0 = n.threshold.max(right[f].0);
                stack.push((n.left, left));
                stack.push((n.right, right));
            }
            None => {
                let share = bounds
                    .iter()
                    .zip(space)
                    .map(|(b, s)| width(*b) / width(*s))
                    .product();
                out.push(Cell {
                    value: n.value,
                    bounds,
                    share,
                });
            }
        }
    }
    out
}

fn width((lo, hi): (f64, f64)) -> f64 {
    (hi - lo).max(0.0)
}

/// The variance of a tree over the box, and of its marginal over each group of features.
fn tree_variances(tree: &Tree, space: &[(f64, f64)], groups: &[Vec<usize>]) -> (f64, Vec<f64>) {
    let cells = cells(tree, space);
    let mean: f64 = cells.iter().map(|c| c.share * c.value).sum();
    let total: f64 = cells
        .iter()
        .map(|c| c.share * (c.value - mean).powi(2))
        .sum();
    let marginals = groups
        .iter()
        .map(|g| match g.as_slice() {
            [f] => marginal_variance_1d(&cells, space, *f, mean),
            g => marginal_variance(&cells, space, g, mean),
        })
        .map(|v| v.max(0.0))
        .collect();
    (total, marginals)
}

/// The share of the group's own box a cell covers (1 outside the group).
fn group_share(c: &Cell, space: &[(f64, f64)], group: &[usize]) -> f64 {
    group
        .iter()
        .map(|&f| width(c.bounds[f]) / width(space[f]))
        .product()
}

fn marginal_variance_1d(cells: &[Cell], space: &[(f64, f64)], f: usize, mean: f64) -> f64 {
    let mut edges: Vec<f64> = cells
        .iter()
        .flat_map(|c| [c.bounds[f].0, c.bounds[f].1])
        .collect();
    edges.push(space[f].0);
    edges.push(space[f].1);
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    // The marginal is constant between consecutive edges: accumulate each cell's contribution
    // over its span of edges with a difference array.
    let mut diff = vec![0.0; edges.len()];
    let index = |v: f64| edges.partition_point(|&e| e < v);
    for c in cells {
        let own = width(c.bounds[f]) / width(space[f]);
        if own <= 0.0 {
            continue;
        }
        let contribution = c.value * c.share / own;
        diff[index(c.bounds[f].0)] += contribution;
        diff[index(c.bounds[f].1)] -= contribution;
    }
    let mut level = 0.0;
    let mut variance = 0.0;
    for (i, pair) in edges.windows(2).enumerate() {
        level += diff[i];
        variance += (pair[1] - pair[0]) / width(space[f]) * (level - mean).powi(2);
    }
    variance
}

fn marginal_variance(cells: &[Cell], space: &[(f64, f64)], group: &[usize], mean: f64) -> f64 {
    // E[m^2] with m(z) = sum over cells of value * (share outside the group) * [z in cell]:
    // the double sum over cells of their products times the overlap of their group boxes.
    let heights: Vec<f64> = cells
        .iter()
        .map(|c| {
            let own = group_share(c, space, group);
            if own > 0.0 {
                c.value * c.share / own
            } else {
                0.0
            }
        })
        .collect();
    let mut second = 0.0;
    for (i, a) in cells.iter().enumerate() {
        if heights[i] == 0.0 {
            continue;
        }
        for (j, b) in cells.iter().enumerate().skip(i) {
            let overlap: f64 = group
                .iter()
                .map(|&f| {
                    let lo = a.bounds[f].0.max(b.bounds[f].0);
                    let hi = a.bounds[f].1.min(b.bounds[f].1);
                    width((lo, hi)) / width(space[f])
                })
                .product();
            let term = heights[i] * heights[j] * overlap;
            second += if i == j { term } else { 2.0 * term };
        }
    }
    second - mean * mean
}

/// fANOVA importance of each group of features (a parameter's columns) for a forest fitted on
/// rows inside `space`: the mean over trees of the group's marginal variance over the tree's
/// variance. None when every tree is constant on the box (nothing to attribute).
pub fn fanova_importances(
    forest: &Forest,
    space: &[(f64, f64)],
    groups: &[Vec<usize>],
) -> Option<Vec<f64>> {
    let per_tree: Vec<(f64, Vec<f64>)> = forest
        .trees
        .par_iter()
        .map(|t| tree_variances(t, space, groups))
        .collect();
    let varied: Vec<&(f64, Vec<f64>)> = per_tree.iter().filter(|(v, _)| *v > 0.0).collect();
    if varied.is_empty() {
        return None;
    }
    let n = varied.len() as f64;
    Some(
        (0..groups.len())
            .map(|g| varied.iter().map(|(total, m)| m[g] / total).sum::<f64>() / n)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::importance::forest::ForestOptions;

    fn sample(n: usize, f: impl Fn(&[f64]) -> f64) -> (Vec<Vec<f64>>, Vec<f64>) {
        // A deterministic low-discrepancy design on the unit cube of 3 features.
        let x: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let i = i as f64 + 0.5;
                vec![
                    (i * 0.618_034) % 1.0,
                    (i * 0.754_877) % 1.0,
                    (i * 0.569_840) % 1.0,
                ]
            })
            .collect();
        let y = x.iter().map(|r| f(r)).collect();
        (x, y)
    }

    #[test]
    fn an_additive_function_splits_its_variance_by_term() {
        // y = 4 x0 + 2 x1: variances 16/12 and 4/12, so fractions 0.8 and 0.2; x2 unused.
        let (x, y) = sample(400, |r| 4.0 * r[0] + 2.0 * r[1]);
        let forest = Forest::fit(&x, &y, ForestOptions::new(32, 64, 3));
        let space = vec![(0.0, 1.0); 3];
        let imp = fanova_importances(&forest, &space, &[vec![0], vec![1], vec![2]]).unwrap();
        assert!((imp[0] - 0.8).abs() < 0.05, "{imp:?}");
        assert!((imp[1] - 0.2).abs() < 0.05, "{imp:?}");
        assert!(imp[2] < 0.01, "{imp:?}");
    }

    #[test]
    fn a_group_of_features_counts_together_and_matches_its_single_feature_form() {
        let (x, y) = sample(300, |r| (6.0 * r[0]).sin() + r[2]);
        let forest = Forest::fit(&x, &y, ForestOptions::new(8, 64, 5));
        let space = vec![(0.0, 1.0); 3];
        // The pairwise form on a one-feature group equals the sweep.
        for t in &forest.trees {
            let cells = cells(t, &space);
            let mean: f64 = cells.iter().map(|c| c.share * c.value).sum();
            let a = marginal_variance_1d(&cells, &space, 0, mean);
            let b = marginal_variance(&cells, &space, &[0], mean);
            assert!((a - b).abs() < 1e-9 * a.max(1.0), "{a} vs {b}");
        }
        let imp = fanova_importances(&forest, &space, &[vec![0, 1], vec![2]]).unwrap();
        assert!(imp[0] > imp[1] && imp[0] < 1.0, "{imp:?}");
    }

    #[test]
    fn a_constant_forest_has_no_importances() {
        let (x, _) = sample(20, |_| 0.0);
        let forest = Forest::fit(&x, &[1.0; 20], ForestOptions::new(4, 64, 1));
        assert!(fanova_importances(&forest, &[(0.0, 1.0); 3], &[vec![0]]).is_none());
    }
}
