//! Deterministic per-trial random streams.
//!
//! Each (seed, trial number, purpose) gets its own generator, so a sampler's choices depend only
//! on its seed and the history, never on how many other trials were sampled before or in which
//! order concurrent trials asked.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, stable across platforms and releases (std's hasher is not).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The generator for one trial and one purpose (a parameter name, or "" for joint sampling).
pub fn trial_rng(seed: u64, trial: u64, purpose: &str) -> SmallRng {
    let s =
        splitmix64(splitmix64(seed ^ 0x5EED) ^ splitmix64(trial.wrapping_add(1)) ^ fnv1a(purpose));
    SmallRng::seed_from_u64(s)
}

/// A seed for samplers created without one.
pub fn fresh_seed() -> u64 {
    rand::random()
}

/// A standard normal draw (Box–Muller; one of the pair is dropped, which keeps a solution a
/// function of its own draws only).
pub fn standard_normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
