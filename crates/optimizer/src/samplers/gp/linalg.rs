//! The dense linear algebra a Gaussian process needs: a Cholesky factor of a symmetric
//! positive-definite matrix, solves with it, and the inverse it gives. Matrices are square,
//! row-major `Vec<f64>`s; the sizes here (a few hundred to a few thousand trials) need nothing
//! blocked, only inner loops over contiguous memory the compiler can vectorise (`dot`), and
//! the two cubic steps of an inverse split over threads (rayon).

use multiversion::multiversion;
use rayon::prelude::*;

/// `Σ a_i b_i` over the shorter length, in eight independent partial sums (which the compiler
/// turns into SIMD lanes; a single running sum cannot be reordered and runs a multiply-add at
/// a time). Compiled also for AVX2 and chosen at run time where the CPU has it.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// The lower Cholesky factor `L` (`a = L Lᵀ`) of the `n × n` matrix `a`, or None when `a` is
/// not positive definite (or holds a NaN).
pub(crate) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s = a[i * n + j] - dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L x = b` in place (`l` lower triangular, `n × n`).
pub(crate) fn solve_lower(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        b[i] = (b[i] - dot(&l[i * n..i * n + i], &b[..i])) / l[i * n + i];
    }
}

/// Solves `Lᵀ x = b` in place.
pub(crate) fn solve_upper_t(l: &[f64], n: usize, b: &mut [f64]) {
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[k * n + i] * b[k];
        }
        b[i] = s / l[i * n + i];
    }
}

/// Solves `L Lᵀ x = b` in place.
pub(crate) fn solve_cholesky(l: &[f64], n: usize, b: &mut [f64]) {
    solve_lower(l, n, b);
    solve_upper_t(l, n, b);
}

/// `U = L⁻ᵀ` (upper triangular, row-major) from the lower triangular `l`: row j of `U` is
/// column j of `L⁻¹`, the forward substitution of `L x = e_j`, every step a dot product of
/// contiguous rows. Rows are computed in parallel.
pub(crate) fn inverse_t(l: &[f64], n: usize) -> Vec<f64> {
    let mut u = vec![0.0; n * n];
    u.par_chunks_mut(n.max(1)).enumerate().for_each(|(j, x)| {
        x[j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            x[i] = -dot(&l[i * n + j..i * n + i], &x[j..i]) / l[i * n + i];
        }
    });
    u
}

/// `(L Lᵀ)⁻¹ = U Uᵀ`, symmetric, from `u = L⁻ᵀ` ([`inverse_t`]).
pub(crate) fn inverse_from_inverse_t(u: &[f64], n: usize) -> Vec<f64> {
    // (A⁻¹)_ij = Σ_{k >= max(i, j)} u_ik u_jk: row i's lower half in parallel, then mirrored.
    let mut inv = vec![0.0; n * n];
    inv.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate().take(i + 1) {
                *v = dot(&u[i * n + i..(i + 1) * n], &u[j * n + i..(j + 1) * n]);
            }
        });
    for i in 0..n {
        for j in 0..i {
            inv[j * n + i] = inv[i * n + j];
        }
    }
    inv
}

/// `y += a x` over the shorter length (AVX2 where the CPU has it, like [`dot`]).
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
pub(crate) fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `v = Uᵀ k` for the upper triangular `u` (so `‖v‖² = kᵀ A⁻¹ k` when `u = L⁻ᵀ`): row k of
/// `u`, scaled by `k_k`, added in turn (contiguous, vectorised).
pub(crate) fn mul_upper_t(u: &[f64], n: usize, k: &[f64]) -> Vec<f64> {
    let mut v = vec![0.0; n];
    for (r, &kr) in k.iter().enumerate().take(n) {
        axpy(&mut v[r..], kr, &u[r * n + r..(r + 1) * n]);
    }
    v
}

/// `w = U v` for the upper triangular `u`.
pub(crate) fn mul_upper(u: &[f64], n: usize, v: &[f64]) -> Vec<f64> {
    (0..n)
        .map(|i| dot(&u[i * n + i..(i + 1) * n], &v[i..]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    fn spd(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let b: Vec<f64> = (0..n * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>();
            }
            a[i * n + i] += n as f64 * 0.1;
        }
        a
    }

    #[test]
    fn cholesky_reconstructs_solves_and_inverts() {
        for n in [1, 2, 7, 40] {
            let a = spd(n, n as u64);
            let l = cholesky(&a, n).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let llt: f64 = (0..n).map(|k| l[i * n + k] * l[j * n + k]).sum();
                    assert!((llt - a[i * n + j]).abs() < 1e-9, "n={n} ({i},{j})");
                    if j > i {
                        assert_eq!(l[i * n + j], 0.0);
                    }
                }
            }
            let b: Vec<f64> = (0..n).map(|i| i as f64 - 3.0).collect();
            let mut x = b.clone();
            solve_cholesky(&l, n, &mut x);
            for i in 0..n {
                let ax: f64 = (0..n).map(|k| a[i * n + k] * x[k]).sum();
                assert!((ax - b[i]).abs() < 1e-8, "n={n} row {i}");
            }
            let u = inverse_t(&l, n);
            let inv = inverse_from_inverse_t(&u, n);
            // ‖Uᵀb‖² = bᵀA⁻¹b, and U(Uᵀb) = A⁻¹b.
            let v = mul_upper_t(&u, n, &b);
            let w = mul_upper(&u, n, &v);
            let quad: f64 = b.iter().zip(&x).map(|(p, q)| p * q).sum();
            assert!(
                (dot(&v, &v) - quad).abs() < 1e-9 * quad.abs().max(1.0),
                "n={n}"
            );
            for i in 0..n {
                assert!((w[i] - x[i]).abs() < 1e-9, "n={n} row {i}");
            }
            for i in 0..n {
                for j in 0..n {
                    let p: f64 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((p - want).abs() < 1e-8, "n={n} ({i},{j}) {p}");
                }
            }
        }
    }

    #[test]
    fn dot_of_every_length_and_of_unequal_lengths() {
        for n in 0..40 {
            let a: Vec<f64> = (0..n).map(|i| i as f64 * 0.5 - 3.0).collect();
            let b: Vec<f64> = (0..n + 3).map(|i| 1.0 + (i % 7) as f64).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (dot(&a, &b) - naive).abs() <= 1e-12 * naive.abs().max(1.0),
                "n={n}"
            );
            assert_eq!(dot(&a, &b), dot(&b, &a));
        }
    }

    #[test]
    fn not_positive_definite_is_refused() {
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(cholesky(&[f64::NAN], 1).is_none());
        assert!(cholesky(&[0.0], 1).is_none());
    }
}
