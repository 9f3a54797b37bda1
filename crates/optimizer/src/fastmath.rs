//! Branch-free `exp` and `ln` for the TPE hot loops.
//!
//! Written so the compiler can vectorise them (no table lookups, no branches, integer work on
//! the f64 bit patterns); accurate to a few ulp on the domains documented on each function.

const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
const LOG2E: f64 = std::f64::consts::LOG2_E;
/// 1.5 * 2^52: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `a * b + c`, fused when `FMA` (only inside functions compiled with the `fma` target
/// feature: elsewhere `mul_add` is a slow library call).
#[inline(always)]
pub fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^x for -700 <= x <= 700 (inputs outside are clamped); in fused multiply-adds when `FMA`
/// (see [`madd`]).
#[inline(always)]
pub fn exp<const FMA: bool>(x: f64) -> f64 {
    let x = x.clamp(-700.0, 700.0);
    let shifted = madd::<FMA>(x, LOG2E, ROUND_MAGIC);
    let k = shifted - ROUND_MAGIC;
    let r = madd::<FMA>(-k, LN2_LO, madd::<FMA>(-k, LN2_HI, x));
    // Taylor series of e^r for |r| <= ln(2)/2, to degree 12 (truncation < 2e-16).
    const C: [f64; 13] = [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let mut p = C[0];
    for c in &C[1..] {
        p = madd::<FMA>(p, r, *c);
    }
    // Scale by 2^k: k sits in the low bits of `shifted`; add it to the exponent field.
    let k_bits = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    f64::from_bits(p.to_bits().wrapping_add(k_bits << 52))
}

/// Natural logarithm for positive, finite, normal x.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    // The biased exponent as a float without an int-to-float conversion (which does not
    // vectorise before AVX-512): place it in the mantissa of 2^52, then subtract 2^52.
    let biased = f64::from_bits((bits >> 52) | 0x4330_0000_0000_0000) - 4_503_599_627_370_496.0;
    // Mantissa m in [1, 2); fold it to [sqrt(1/2), sqrt(2)).
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = biased - 1023.0 + if big { 1.0 } else { 0.0 };
    // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p = 1.0 / 21.0;
    p = p * s2 + 1.0 / 19.0;
    p = p * s2 + 1.0 / 17.0;
    p = p * s2 + 1.0 / 15.0;
    p = p * s2 + 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    p = p * s2 + 1.0;
    e * LN2_HI + (e * LN2_LO + 2.0 * s * p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_std() {
        let mut worst: f64 = 0.0;
        for i in 0..=200_000 {
            let x = -700.0 + 1400.0 * i as f64 / 200_000.0;
            let (a, b) = (super::exp::<false>(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 1e-15, "{worst:e}");
        assert_eq!(super::exp::<false>(0.0), 1.0);
        // The fused form (a library fma here, the instruction where the CPU has it).
        for i in 0..=20_000 {
            let x = -700.0 + 1400.0 * i as f64 / 20_000.0;
            let (a, b) = (super::exp::<true>(x), x.exp());
            assert!(((a - b) / b).abs() < 1e-15, "{x}");
        }
    }

    #[test]
    fn ln_matches_std() {
        let mut worst: f64 = 0.0;
        for i in 1..=200_000 {
            let x = (i as f64 * 1.37e-3).powi(3) * 1e-5;
            let (a, b) = (super::ln(x), x.ln());
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
        assert!(worst < 4e-16, "{worst:e}");
        assert_eq!(super::ln(1.0), 0.0);
    }
}
