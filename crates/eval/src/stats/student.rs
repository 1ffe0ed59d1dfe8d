//! Student's t distribution for any (also fractional) degrees of freedom,
//! the normal distribution, and the power of a two-sided t-test.
//!
//! Fractional degrees of freedom come from Welch's and Satterthwaite's
//! approximations, so a table of integer quantiles is not enough. The t
//! distribution function is the regularised incomplete beta function
//! (continued fraction, Numerical Recipes §6.4); quantiles invert it by
//! bisection; power integrates the noncentral t over the χ² of the
//! standard error (Simpson's rule), so "the smallest difference these
//! seeds could detect" is exact, not the large-sample z approximation.

/// z such that P(|Z| < z) = 0.95 for a standard normal Z.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Degrees of freedom a distribution is defined for: positive (also
/// infinite), not NaN.
fn valid_df(df: f64) -> bool {
    df > 0.0
}

/// A probability strictly inside (lo, 1).
fn inside(p: f64, lo: f64) -> bool {
    p > lo && p < 1.0
}

/// The standard normal distribution function.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// The continued fraction of the incomplete beta function (modified
/// Lentz), converging for x < (a + 1)/(a + b + 2).
fn beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// The regularised incomplete beta function I_x(a, b).
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front =
        libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_fraction(b, a, 1.0 - x) / b
    }
}

/// P(T ≤ t) for Student's t with `df` > 0 degrees of freedom (NaN
/// otherwise); infinite df is the normal distribution.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    if !valid_df(df) || t.is_nan() {
        return f64::NAN;
    }
    if df.is_infinite() {
        return normal_cdf(t);
    }
    if t.is_infinite() {
        return if t > 0.0 { 1.0 } else { 0.0 };
    }
    let tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    if t > 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The `p`-quantile of Student's t with `df` > 0 degrees of freedom, to
/// about 1e-12 (NaN for df ≤ 0 or p outside (0, 1)).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if !valid_df(df) || !inside(p, 0.0) {
        return f64::NAN;
    }
    if p < 0.5 {
        return -t_quantile(1.0 - p, df);
    }
    if p == 0.5 {
        return 0.0;
    }
    // Bracket, then bisect: the distribution function is monotone, and the
    // bracket holds every quantile a report asks for (df ≥ 0.5 … ∞).
    let mut hi = 1.0;
    while t_cdf(hi, df) < p {
        hi *= 2.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The two-sided 95% quantile t(0.975, df).
pub fn t_975(df: f64) -> f64 {
    t_quantile(0.975, df)
}

/// The power of the two-sided t-test at level `alpha` with `df` degrees of
/// freedom when the true difference is `delta` standard errors: P(|T'| >
/// t(1 − α/2, df)) for the noncentral T' = (Z + δ)/√(V/df), V ~ χ²(df).
/// Integrated over w = √V (whose density is finite at 0 for every df ≥ 1)
/// with Simpson's rule on 4,000 panels.
pub fn t_test_power(delta: f64, df: f64, alpha: f64) -> f64 {
    if !valid_df(df) {
        return f64::NAN;
    }
    let crit = t_quantile(1.0 - alpha / 2.0, df);
    if df.is_infinite() {
        return normal_cdf(delta - crit) + normal_cdf(-delta - crit);
    }
    // Density of w = √V: 2·w^(df−1)·e^(−w²/2) / (2^(df/2)·Γ(df/2)). Below
    // df 2 its power of w is under 1 (a cusp, or a pole below df 1), so
    // integrate over t with w = t^m, m = 2/df: the density of t is then
    // proportional to t itself near 0, and Simpson's rule converges.
    let m = (2.0 / df).max(1.0);
    let ln_norm =
        std::f64::consts::LN_2 - (df / 2.0) * std::f64::consts::LN_2 - libm::lgamma(df / 2.0)
            + m.ln();
    let integrand = |t: f64| {
        if t <= 0.0 {
            return 0.0;
        }
        let w = t.powf(m);
        let density = (ln_norm + (df - 1.0) * w.ln() - 0.5 * w * w + (m - 1.0) * t.ln()).exp();
        let c = crit * w / df.sqrt();
        density * (normal_cdf(delta - c) + normal_cdf(-delta - c))
    };
    // w concentrates around √df with sd about 1/√2: integrate where its
    // density is not negligible.
    let w_min = (df.sqrt() - 12.0).max(0.0);
    let w_max = (df + 12.0 * (2.0 * df).sqrt() + 60.0).sqrt();
    let (t_min, t_max) = (w_min.powf(1.0 / m), w_max.powf(1.0 / m));
    let panels = 4000;
    let h = (t_max - t_min) / panels as f64;
    let mut sum = 0.0;
    for i in 0..=panels {
        let weight = if i == 0 || i == panels {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        sum += weight * integrand(t_min + i as f64 * h);
    }
    (sum * h / 3.0).clamp(0.0, 1.0)
}

/// The smallest true difference, in standard errors, that a two-sided
/// t-test at level `alpha` with `df` degrees of freedom detects with
/// probability `power`.
pub fn detectable_effect(df: f64, power: f64, alpha: f64) -> f64 {
    if !valid_df(df) || !inside(power, alpha / 2.0) {
        return f64::NAN;
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while t_test_power(hi, df, alpha) < power {
        hi *= 2.0;
        if hi > 1e6 {
            return f64::INFINITY;
        }
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if t_test_power(mid, df, alpha) < power {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-9 {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn quantiles_with_closed_forms() {
        // df 1 is Cauchy: t_p = tan(π(p − 1/2)).
        for p in [0.6, 0.8, 0.975, 0.995] {
            let exact = (std::f64::consts::PI * (p - 0.5)).tan();
            assert!(
                close(t_quantile(p, 1.0), exact, 1e-9 * exact.max(1.0)),
                "{p}"
            );
        }
        // df 2: F(t) = 1/2 + t/(2√(2 + t²)), so t_p = α√(2/(1 − α²)) with
        // α = 2p − 1: t(0.975) = 0.95·√(2/0.0975) = 4.302652730,
        // t(0.8) = 0.6·√(2/0.64) = 1.060660172.
        assert!(close(t_quantile(0.975, 2.0), 4.302_652_730, 1e-8));
        assert!(close(t_quantile(0.8, 2.0), 1.060_660_172, 1e-8));
        assert!(close(t_quantile(0.2, 2.0), -1.060_660_172, 1e-8));
        // Published table values: t(0.975, 4) = 2.776445105,
        // t(0.975, 9) = 2.262157163, t(0.975, 30) = 2.042272456; and,
        // from mpmath's incomplete beta at 30 digits, t(0.8, 9) =
        // 0.883403860 and the fractional df of the Welch and crossed
        // golden examples: t(0.975, 4.0754717) = 2.756284874,
        // t(0.975, 1.4693878) = 6.195387261.
        assert!(close(t_quantile(0.975, 4.0), 2.776_445_105, 1e-8));
        assert!(close(t_quantile(0.975, 9.0), 2.262_157_163, 1e-8));
        assert!(close(t_quantile(0.975, 30.0), 2.042_272_456, 1e-8));
        assert!(close(t_quantile(0.8, 9.0), 0.883_403_860, 1e-8));
        assert!(close(t_quantile(0.975, 216.0 / 53.0), 2.756_284_874, 1e-8));
        assert!(close(t_quantile(0.975, 72.0 / 49.0), 6.195_387_261, 1e-8));
        // Large df joins the normal; infinite df is the normal.
        assert!(close(t_quantile(0.975, 1e9), Z_95, 1e-6));
        assert!(close(t_quantile(0.975, f64::INFINITY), Z_95, 1e-12));
        assert!(close(t_test_power(0.0, f64::INFINITY, 0.05), 0.05, 1e-12));
        assert_eq!(t_quantile(0.5, 3.0), 0.0);
        assert!(t_quantile(0.975, 0.0).is_nan() && t_quantile(1.0, 3.0).is_nan());
    }

    /// The distribution function at a fractional df (Welch's,
    /// Satterthwaite's) against a direct numerical integral of the density
    /// Γ((ν+1)/2)/(√(νπ)Γ(ν/2))·(1 + t²/ν)^(−(ν+1)/2).
    #[test]
    fn cdf_at_fractional_df_matches_the_integrated_density() {
        for &(df, t) in &[(1.47, 2.0), (2.5, 1.3), (4.07, -0.7), (7.3, 3.1)] {
            let c = libm::lgamma((df + 1.0) / 2.0)
                - libm::lgamma(df / 2.0)
                - 0.5 * (df * std::f64::consts::PI).ln();
            let dens = |x: f64| (c - (df + 1.0) / 2.0 * (1.0 + x * x / df).ln()).exp();
            // P(0 < T ≤ t) by Simpson, plus 1/2.
            let n = 20_000;
            let h = t / n as f64;
            let mut s = dens(0.0) + dens(t);
            for i in 1..n {
                s += if i % 2 == 1 { 4.0 } else { 2.0 } * dens(i as f64 * h);
            }
            let integral = 0.5 + s * h / 3.0;
            assert!(close(t_cdf(t, df), integral, 1e-9), "df {df} t {t}");
            // And the quantile inverts it.
            let p = t_cdf(t, df);
            assert!(close(t_quantile(p, df), t, 1e-9), "df {df} t {t}");
        }
    }

    #[test]
    fn normal_cdf_golden() {
        assert!(close(normal_cdf(0.0), 0.5, 1e-15));
        assert!(close(normal_cdf(Z_95), 0.975, 1e-12));
        assert!(close(normal_cdf(-1.0), 0.158_655_253_931_457, 1e-12));
    }

    #[test]
    fn power_golden() {
        // No difference: the test rejects at its level.
        assert!(close(t_test_power(0.0, 5.0, 0.05), 0.05, 1e-6));
        assert!(close(t_test_power(0.0, 1.47, 0.05), 0.05, 1e-6));
        assert!(close(t_test_power(0.0, 0.8, 0.05), 0.05, 1e-6));
        // Large df: the z-test, power Φ(δ − 1.96) + Φ(−δ − 1.96), so 80%
        // at δ = z(0.975) + z(0.8) = 1.959964 + 0.841621 = 2.801585.
        assert!(close(detectable_effect(1e7, 0.8, 0.05), 2.801_585, 2e-4));
        // The noncentral t, integrated by mpmath at 25 digits: 80% power
        // at 5.653489 standard errors with df 2, 3.149633 with df 9 (a
        // paired test on 10 seeds detects 0.996 standard deviations of the
        // differences), 3.619598 with df 4.5.
        assert!(close(detectable_effect(2.0, 0.8, 0.05), 5.653_489, 1e-5));
        assert!(close(detectable_effect(9.0, 0.8, 0.05), 3.149_633, 1e-5));
        assert!(close(detectable_effect(4.5, 0.8, 0.05), 3.619_598, 1e-5));
        // Fractional df below 2 (Satterthwaite's, with few seeds): 8.052027
        // at df 1.47, 29.661066 at df 0.8.
        assert!(close(detectable_effect(1.47, 0.8, 0.05), 8.052_027, 1e-4));
        assert!(close(detectable_effect(0.8, 0.8, 0.05), 29.661_066, 1e-3));
        assert!(close(t_test_power(3.149_633, 9.0, 0.05), 0.8, 1e-5));
    }
}
