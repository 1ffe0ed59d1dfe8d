//! How well the critic fits and where the advantages point, over one
//! iteration's response tokens, computed before the update from the
//! rollouts' values and the returns and advantages credit assignment gave
//! them (issue 19: MA-PPO's slow start).
//!
//! - `critic_explained_variance`: `1 − Var(R − V)/Var(R)` over all response
//!   tokens (returns R, the critic's targets; values V, the rollouts');
//! - `critic_bias`: the mean of `R − V` over those tokens (positive: the
//!   critic undervalues, and every advantage carries part of it);
//! - `critic_bias_final_token`: the mean of `R − V` at each response's last
//!   token, whose return holds the reward model's score: the error GAE
//!   carries backwards;
//! - `advantage_position_corr`: the Pearson correlation between each token's
//!   advantage, before whitening, and its 0-based index in its response.
//!   Whitening removes a bias common to every token, not one that grows
//!   towards the end of a response.
//!
//! A figure that is undefined (no tokens, a constant) is `None`.

use crate::error::{check_finite, RlError};

/// One response's per-token figures, aligned.
#[derive(Clone, Copy, Debug)]
pub struct TokenFigures<'a> {
    /// The critic's values at rollout time.
    pub values: &'a [f32],
    /// The returns the critic regresses onto.
    pub returns: &'a [f32],
    /// The advantages before whitening.
    pub advantages: &'a [f32],
}

/// The figures of one iteration; see the module's docs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CreditDiagnostics {
    pub critic_explained_variance: Option<f64>,
    pub critic_bias: Option<f64>,
    pub critic_bias_final_token: Option<f64>,
    pub advantage_position_corr: Option<f64>,
}

impl CreditDiagnostics {
    /// The figures under their metrics column names, defined ones only.
    pub fn columns(&self) -> Vec<(&'static str, f64)> {
        [
            ("critic_explained_variance", self.critic_explained_variance),
            ("critic_bias", self.critic_bias),
            ("critic_bias_final_token", self.critic_bias_final_token),
            ("advantage_position_corr", self.advantage_position_corr),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

/// The iteration's figures over every token of `rows` (in f64).
pub fn credit_diagnostics(rows: &[TokenFigures]) -> Result<CreditDiagnostics, RlError> {
    let (mut errors, mut returns, mut advantages, mut positions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut final_errors = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let len = row.values.len();
        if row.returns.len() != len {
            return Err(RlError::length(
                format!("returns of response {i}"),
                len,
                row.returns.len(),
            ));
        }
        if row.advantages.len() != len {
            return Err(RlError::length(
                format!("advantages of response {i}"),
                len,
                row.advantages.len(),
            ));
        }
        check_finite("values", row.values)?;
        check_finite("returns", row.returns)?;
        check_finite("advantages", row.advantages)?;
        for t in 0..len {
            let (v, r) = (row.values[t] as f64, row.returns[t] as f64);
            errors.push(r - v);
            returns.push(r);
            advantages.push(row.advantages[t] as f64);
            positions.push(t as f64);
        }
        if len > 0 {
            final_errors.push(errors[errors.len() - 1]);
        }
    }
    let critic_explained_variance = match (variance(&errors), variance(&returns)) {
        (Some(e), Some(r)) if r > 0.0 => Some(1.0 - e / r),
        _ => None,
    };
    Ok(CreditDiagnostics {
        critic_explained_variance,
        critic_bias: mean(&errors),
        critic_bias_final_token: mean(&final_errors),
        advantage_position_corr: pearson(&advantages, &positions),
    })
}

fn mean(x: &[f64]) -> Option<f64> {
    (!x.is_empty()).then(|| x.iter().sum::<f64>() / x.len() as f64)
}

/// The population variance (the ratios above do not depend on n or n − 1).
fn variance(x: &[f64]) -> Option<f64> {
    let m = mean(x)?;
    Some(x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64)
}

/// Pearson's r; `None` when either side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    let (mx, my) = (mean(x)?, mean(y)?);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: Option<f64>, want: f64) {
        let got = got.expect("defined");
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn golden() {
        // Two responses, three tokens and one.
        //   values  [1, 2, 3] [0]     returns [2, 2, 5] [1]
        //   R − V   [1, 0, 2] [1]: mean 1, variance (0 + 1 + 1 + 0)/4 = 0.5
        //   returns mean 2.5, variance (0.25 + 0.25 + 6.25 + 2.25)/4 = 2.25
        //   explained variance 1 − 0.5/2.25 = 7/9
        //   last tokens' R − V: 2 and 1, mean 1.5
        //   advantages [1, 2, 4] [3] at positions [0, 1, 2] [0]:
        //     means 2.5 and 0.75; deviations a: −1.5, −0.5, 1.5, 0.5;
        //     t: −0.75, 0.25, 1.25, −0.75;
        //     Σ da·dt = 1.125 − 0.125 + 1.875 − 0.375 = 2.5,
        //     Σ da² = 2.25 + 0.25 + 2.25 + 0.25 = 5,
        //     Σ dt² = 0.5625 + 0.0625 + 1.5625 + 0.5625 = 2.75;
        //     r = 2.5/√(5·2.75) = 2.5/√13.75
        let d = credit_diagnostics(&[
            TokenFigures {
                values: &[1.0, 2.0, 3.0],
                returns: &[2.0, 2.0, 5.0],
                advantages: &[1.0, 2.0, 4.0],
            },
            TokenFigures {
                values: &[0.0],
                returns: &[1.0],
                advantages: &[3.0],
            },
            TokenFigures {
                values: &[],
                returns: &[],
                advantages: &[],
            },
        ])
        .unwrap();
        close(d.critic_explained_variance, 7.0 / 9.0);
        close(d.critic_bias, 1.0);
        close(d.critic_bias_final_token, 1.5);
        close(d.advantage_position_corr, 2.5 / 13.75f64.sqrt());
        let names: Vec<&str> = d.columns().iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            [
                "critic_explained_variance",
                "critic_bias",
                "critic_bias_final_token",
                "advantage_position_corr"
            ]
        );
    }

    #[test]
    fn undefined_figures_are_none() {
        assert_eq!(
            credit_diagnostics(&[]).unwrap(),
            CreditDiagnostics::default()
        );
        // One token: a bias, but no variance and no correlation.
        let d = credit_diagnostics(&[TokenFigures {
            values: &[0.5],
            returns: &[2.0],
            advantages: &[1.5],
        }])
        .unwrap();
        assert_eq!(d.critic_bias, Some(1.5));
        assert_eq!(d.critic_explained_variance, None);
        assert_eq!(d.advantage_position_corr, None);
        assert_eq!(d.columns().len(), 2);
        // A perfect critic explains everything; advantages falling along
        // the response correlate −1 with the position.
        let d = credit_diagnostics(&[TokenFigures {
            values: &[1.0, 3.0],
            returns: &[1.0, 3.0],
            advantages: &[0.5, 0.25],
        }])
        .unwrap();
        assert_eq!(d.critic_explained_variance, Some(1.0));
        assert_eq!(d.critic_bias, Some(0.0));
        close(d.advantage_position_corr, -1.0);
        let err = credit_diagnostics(&[TokenFigures {
            values: &[1.0, 3.0],
            returns: &[1.0],
            advantages: &[0.5, 0.25],
        }])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "returns of response 0 has length 1, expected 2"
        );
    }
}
