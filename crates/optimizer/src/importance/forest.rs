//! Random forests of regression trees (CART, squared error), fitted as a random forest
//! regressor is fitted by the usual recipe: each tree on a bootstrap sample of the rows, at
//! every node the best split over all features (visited in random order), thresholds halfway
//! between consecutive distinct values, grown until a node is pure, too small to split, or at
//! the maximum depth. The trees keep their structure, which fANOVA reads.

use rand::seq::SliceRandom;
use rand::{Rng, RngExt};
use rayon::prelude::*;

use crate::rng::trial_rng;

/// Values closer than this count as equal when looking for a split (as scikit-learn does).
const FEATURE_THRESHOLD: f64 = 1e-7;

/// How a forest is grown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForestOptions {
    /// Number of trees.
    pub n_trees: usize,
    /// Maximum depth of a tree (the root is at depth 0).
    pub max_depth: usize,
    /// A node with fewer distinct rows is not split.
    pub min_samples_split: usize,
    /// Each side of a split keeps at least this many distinct rows.
    pub min_samples_leaf: usize,
    /// Seed of the bootstrap samples and feature orders.
    pub seed: u64,
}

impl ForestOptions {
    /// Optuna's settings for importance evaluation: 64 trees of depth at most 64, grown fully.
    pub fn new(n_trees: usize, max_depth: usize, seed: u64) -> Self {
        Self {
            n_trees,
            max_depth,
            min_samples_split: 2,
            min_samples_leaf: 1,
            seed,
        }
    }
}

/// One node of a tree: a split (`feature`, `threshold`, children) or a leaf (`feature` None).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The feature split on, or None for a leaf.
    pub feature: Option<usize>,
    /// Rows with `x[feature] <= threshold` go left (0 at a leaf).
    pub threshold: f64,
    /// Index of the left child (valid for splits).
    pub left: usize,
    /// Index of the right child (valid for splits).
    pub right: usize,
    /// Mean target of the (weighted) rows that reach the node: the prediction at a leaf.
    pub value: f64,
    /// Weighted number of rows that reach the node.
    pub weight: f64,
    /// Weighted variance of their targets.
    pub impurity: f64,
}

/// A fitted regression tree; `nodes[0]` is the root and children come after their parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The nodes, in depth-first order.
    pub nodes: Vec<Node>,
}

/// A fitted random forest.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    /// The trees.
    pub trees: Vec<Tree>,
    /// Number of features of the rows it was fitted on.
    pub n_features: usize,
}

impl Forest {
    /// Fits a forest on `x` (rows of `n_features` values each) and targets `y`. The trees are
    /// grown in parallel; the result depends only on the data and `options.seed`.
    pub fn fit(x: &[Vec<f64>], y: &[f64], options: ForestOptions) -> Self {
        let n_features = x.first().map_or(0, Vec::len);
        debug_assert!(x.iter().all(|row| row.len() == n_features));
        debug_assert_eq!(x.len(), y.len());
        let trees = (0..options.n_trees)
            .into_par_iter()
            .map(|i| {
                let mut rng = trial_rng(options.seed, i as u64, "forest");
                let mut weights = vec![0.0; y.len()];
                for _ in 0..y.len() {
                    weights[rng.random_range(0..y.len())] += 1.0;
                }
                Tree::fit(x, y, &weights, n_features, &options, &mut rng)
            })
            .collect();
        Self { trees, n_features }
    }

    /// Mean decrease in impurity of each feature: per tree the weighted impurity decrease of
    /// its splits on that feature, normalised to sum to one, averaged over the trees and
    /// normalised again. All zeros when no tree splits.
    pub fn impurity_importances(&self) -> Vec<f64> {
        let mut total = vec![0.0; self.n_features];
        for tree in self.trees.iter().filter(|t| t.nodes.len() > 1) {
            let per_tree = tree.impurity_decrease(self.n_features);
            let sum: f64 = per_tree.iter().sum();
            if sum > 0.0 {
                for (t, v) in total.iter_mut().zip(per_tree) {
                    *t += v / sum;
                }
            }
        }
        normalised(total)
    }
}

/// `v` scaled to sum to one (unchanged when its sum is zero).
pub(crate) fn normalised(mut v: Vec<f64>) -> Vec<f64> {
    let sum: f64 = v.iter().sum();
    if sum > 0.0 {
        v.iter_mut().for_each(|x| *x /= sum);
    }
    v
}

/// Running weighted sums of a set of targets.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    w: f64,
    wy: f64,
    wyy: f64,
}

impl Sums {
    fn add(&mut self, w: f64, y: f64) {
        self.w += w;
        self.wy += w * y;
        self.wyy += w * y * y;
    }
    fn sub(self, o: Sums) -> Sums {
        Sums {
            w: self.w - o.w,
            wy: self.wy - o.wy,
            wyy: self.wyy - o.wyy,
        }
    }
    fn mean(&self) -> f64 {
        self.wy / self.w
    }
    fn variance(&self) -> f64 {
        (self.wyy / self.w - self.mean().powi(2)).max(0.0)
    }
}

struct Pending {
    node: usize,
    rows: Vec<usize>,
    depth: usize,
}

impl Tree {
    fn fit(
        x: &[Vec<f64>],
        y: &[f64],
        weights: &[f64],
        n_features: usize,
        options: &ForestOptions,
        rng: &mut impl Rng,
    ) -> Tree {
        let rows: Vec<usize> = (0..y.len()).filter(|&i| weights[i] > 0.0).collect();
        let mut nodes = Vec::new();
        let mut stack = vec![Pending {
            node: 0,
            rows,
            depth: 0,
        }];
        nodes.push(leaf(Sums::default()));
        let mut features: Vec<usize> = (0..n_features).collect();
        while let Some(Pending { node, rows, depth }) = stack.pop() {
            let mut sums = Sums::default();
            for &r in &rows {
                sums.add(weights[r], y[r]);
            }
            nodes[node] = leaf(sums);
            if depth >= options.max_depth
                || rows.len() < options.min_samples_split.max(2 * options.min_samples_leaf)
                || sums.variance() <= f64::EPSILON
            {
                continue;
            }
            features.shuffle(rng);
            let Some((feature, threshold)) = best_split(
                x,
                y,
                weights,
                &rows,
                &features,
                sums,
                options.min_samples_leaf,
            ) else {
                continue;
            };
            let (left_rows, right_rows): (Vec<usize>, Vec<usize>) =
                rows.iter().partition(|&&r| x[r][feature] <= threshold);
            let (left, right) = (nodes.len(), nodes.len() + 1);
            nodes.push(leaf(Sums::default()));
            nodes.push(leaf(Sums::default()));
            let n = &mut nodes[node];
            n.feature = Some(feature);
            n.threshold = threshold;
            n.left = left;
            n.right = right;
            // Right first, so the left subtree is grown (and numbered) first.
            stack.push(Pending {
                node: right,
                rows: right_rows,
                depth: depth + 1,
            });
            stack.push(Pending {
                node: left,
                rows: left_rows,
                depth: depth + 1,
            });
        }
        Tree { nodes }
    }

    /// Weighted impurity decrease of the splits on each feature.
    fn impurity_decrease(&self, n_features: usize) -> Vec<f64> {
        let mut out = vec![0.0; n_features];
        for n in &self.nodes {
            if let Some(f) = n.feature {
                let (l, r) = (&self.nodes[n.left], &self.nodes[n.right]);
                out[f] += n.weight * n.impurity - l.weight * l.impurity - r.weight * r.impurity;
            }
        }
        out
    }

    /// The tree's prediction for one row.
    pub fn predict(&self, row: &[f64]) -> f64 {
        let mut i = 0;
        while let Some(f) = self.nodes[i].feature {
            let n = &self.nodes[i];
            i = if row[f] <= n.threshold {
                n.left
            } else {
                n.right
            };
        }
        self.nodes[i].value
    }
}

fn leaf(s: Sums) -> Node {
    let (value, impurity) = if s.w > 0.0 {
        (s.mean(), s.variance())
    } else {
        (0.0, 0.0)
    };
    Node {
        feature: None,
        threshold: 0.0,
        left: 0,
        right: 0,
        value,
        weight: s.w,
        impurity,
    }
}

/// The split of `rows` that lowers the weighted squared error most, if any is allowed.
fn best_split(
    x: &[Vec<f64>],
    y: &[f64],
    weights: &[f64],
    rows: &[usize],
    features: &[usize],
    total: Sums,
    min_leaf: usize,
) -> Option<(usize, f64)> {
    let mut best: Option<(f64, usize, f64)> = None;
    // Without a split the proxy (sum of squared sums over weights) is this; a split must beat it.
    let base = total.wy * total.wy / total.w;
    let mut order = rows.to_vec();
    for &f in features {
        order.sort_by(|&a, &b| x[a][f].total_cmp(&x[b][f]));
        let mut left = Sums::default();
        for i in 0..order.len() - 1 {
            let r = order[i];
            left.add(weights[r], y[r]);
            let (here, next) = (x[r][f], x[order[i + 1]][f]);
            if next <= here + FEATURE_THRESHOLD
                || i + 1 < min_leaf
                || order.len() - i - 1 < min_leaf
            {
                continue;
            }
            let right = total.sub(left);
            let proxy = left.wy * left.wy / left.w + right.wy * right.wy / right.w;
            if proxy > best.map_or(base, |b| b.0) {
                let mut threshold = 0.5 * (here + next);
                if threshold == next || !threshold.is_finite() {
                    threshold = here;
                }
                best = Some((proxy, f, threshold));
            }
        }
    }
    best.map(|(_, f, t)| (f, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
        let x: Vec<Vec<f64>> = (0..n)
            .map(|i| vec![(i % 10) as f64 / 10.0, (i / 10 % 10) as f64 / 10.0])
            .collect();
        let y = x
            .iter()
            .map(|r| if r[0] > 0.45 { 10.0 } else { 0.0 } + 0.1 * r[1])
            .collect();
        (x, y)
    }

    #[test]
    fn a_tree_splits_first_on_the_feature_that_explains_the_target() {
        let (x, y) = grid(100);
        let forest = Forest::fit(&x, &y, ForestOptions::new(8, 64, 1));
        for tree in &forest.trees {
            assert_eq!(tree.nodes[0].feature, Some(0));
            let t = tree.nodes[0].threshold;
            assert!((0.4..=0.5).contains(&t), "threshold {t}");
        }
        // Grown fully, the trees reproduce the targets of the rows they saw closely.
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(r, y)| (forest.trees[0].predict(r) - y).abs())
            .sum();
        assert!(err / (x.len() as f64) < 0.5, "mean error {err}");
    }

    #[test]
    fn impurity_importances_rank_the_features_and_sum_to_one() {
        let (x, y) = grid(100);
        let imp = Forest::fit(&x, &y, ForestOptions::new(16, 64, 2)).impurity_importances();
        assert!((imp.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(imp[0] > 0.99 && imp[1] < 0.01, "{imp:?}");
    }

    #[test]
    fn the_same_seed_grows_the_same_forest_and_depth_is_bounded() {
        let (x, y) = grid(50);
        let a = Forest::fit(&x, &y, ForestOptions::new(4, 1, 7));
        assert_eq!(a, Forest::fit(&x, &y, ForestOptions::new(4, 1, 7)));
        assert!(a.trees.iter().all(|t| t.nodes.len() <= 3));
        // A constant target is never split.
        let flat = Forest::fit(&x, &vec![1.0; 50], ForestOptions::new(2, 64, 7));
        assert!(flat.trees.iter().all(|t| t.nodes.len() == 1));
        assert_eq!(flat.impurity_importances(), vec![0.0, 0.0]);
    }
}
