//! The dense linear algebra a Gaussian process needs: a Cholesky factor of a symmetric
//! positive-definite matrix, solves with it, and the inverse it gives. Matrices are square,
//! row-major `Vec<f64>`s; the sizes here (a few hundred to a few thousand trials) need nothing
//! blocked.

/// The lower Cholesky factor `L` (`a = L Lᵀ`) of the `n × n` matrix `a`, or None when `a` is
/// not positive definite (or holds a NaN).
pub(crate) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (&l[i * n..i * n + j], &l[j * n..j * n + j]);
            let dot: f64 = ri.iter().zip(rj).map(|(x, y)| x * y).sum();
            let s = a[i * n + j] - dot;
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
        let dot: f64 = l[i * n..i * n + i]
            .iter()
            .zip(&b[..i])
            .map(|(x, y)| x * y)
            .sum();
        b[i] = (b[i] - dot) / l[i * n + i];
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

/// `(L Lᵀ)⁻¹`, symmetric, from the Cholesky factor `l`.
pub(crate) fn inverse_from_cholesky(l: &[f64], n: usize) -> Vec<f64> {
    // Linv = L⁻¹ (lower), then A⁻¹ = Linvᵀ Linv.
    let mut linv = vec![0.0; n * n];
    for j in 0..n {
        linv[j * n + j] = 1.0 / l[j * n + j];
        for i in j + 1..n {
            let mut s = 0.0;
            for k in j..i {
                s += l[i * n + k] * linv[k * n + j];
            }
            linv[i * n + j] = -s / l[i * n + i];
        }
    }
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            // (Linvᵀ Linv)_ij = Σ_k Linv_ki Linv_kj over k >= max(i, j) = i.
            let s: f64 = (i..n).map(|k| linv[k * n + i] * linv[k * n + j]).sum();
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    inv
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
            let inv = inverse_from_cholesky(&l, n);
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
    fn not_positive_definite_is_refused() {
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(cholesky(&[f64::NAN], 1).is_none());
        assert!(cholesky(&[0.0], 1).is_none());
    }
}
