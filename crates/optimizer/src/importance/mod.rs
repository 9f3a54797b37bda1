//! Hyperparameter importance: a random forest fitted on (parameters, objective) of the finished
//! trials, read two ways — functional ANOVA ([`fanova_importances`]) and mean decrease in
//! impurity ([`Forest::impurity_importances`]). Rows are the trials' parameters encoded as
//! numbers (one-hot columns for a categorical parameter); the caller groups the columns back into
//! parameters.

mod fanova;
mod forest;

pub use fanova::fanova_importances;
pub use forest::{Forest, ForestOptions, Node, Tree};
