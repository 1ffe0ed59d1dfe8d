//! One value per macro action from per-token values (`modeling_macro_action`).

use std::fmt;
use std::str::FromStr;

use crate::error::{check_finite, RlError};
use crate::segment::{spans, validate_starts};

/// How the tokens of a macro action are weighted into one number. The
/// reference applies the same function to the critic's values and to the
/// rewards, and so does [`crate::gae::macro_advantages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ValueFunction {
    /// The mean of the tokens (the paper's default).
    #[default]
    Equal,
    /// The last token of the macro action.
    Unit,
    /// Token `i` of the macro action weighs `1/(i+1)`, weights normalised:
    /// the first tokens, which decide the macro action, count most.
    Position,
}

impl ValueFunction {
    /// The weights of the `n` tokens of one macro action; they sum to 1.
    pub fn weights(self, n: usize) -> Vec<f64> {
        match self {
            ValueFunction::Equal => vec![1.0 / n as f64; n],
            ValueFunction::Unit => {
                let mut w = vec![0.0; n];
                if let Some(last) = w.last_mut() {
                    *last = 1.0;
                }
                w
            }
            ValueFunction::Position => {
                let raw: Vec<f64> = (0..n).map(|i| 1.0 / (i + 1) as f64).collect();
                let total: f64 = raw.iter().sum();
                raw.into_iter().map(|w| w / total).collect()
            }
        }
    }
}

impl fmt::Display for ValueFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueFunction::Equal => "equal",
            ValueFunction::Unit => "unit",
            ValueFunction::Position => "position",
        })
    }
}

impl FromStr for ValueFunction {
    type Err = RlError;

    fn from_str(s: &str) -> Result<Self, RlError> {
        match s {
            "equal" => Ok(ValueFunction::Equal),
            "unit" => Ok(ValueFunction::Unit),
            "position" => Ok(ValueFunction::Position),
            _ => Err(RlError::ParseValueFunction(s.to_string())),
        }
    }
}

/// One value per macro action: the `vf`-weighted sum of its tokens.
///
/// Sums run in f64 and round once to f32, so a one-token macro action gives
/// back its token's value bit for bit under every value function (weight
/// exactly 1), which is what makes `fixed:1` reproduce token-level PPO.
pub fn aggregate(
    per_token: &[f32],
    starts: &[u32],
    vf: ValueFunction,
) -> Result<Vec<f32>, RlError> {
    validate_starts(starts, per_token.len())?;
    check_finite("per-token values", per_token)?;
    Ok(spans(starts, per_token.len())
        .map(|span| {
            let tokens = &per_token[span];
            match (vf, tokens) {
                // Taken as they are, so even a −0.0 comes back unchanged.
                (_, [only]) => *only,
                (ValueFunction::Unit, [.., last]) => *last,
                _ => {
                    let weights = vf.weights(tokens.len());
                    tokens
                        .iter()
                        .zip(&weights)
                        .map(|(&x, &w)| x as f64 * w)
                        .sum::<f64>() as f32
                }
            }
        })
        .collect())
}

/// Gives every token its macro action's value (the inverse direction).
pub fn expand(per_macro: &[f32], starts: &[u32], len: usize) -> Result<Vec<f32>, RlError> {
    validate_starts(starts, len)?;
    if per_macro.len() != starts.len() {
        return Err(RlError::length(
            "per-macro-action values",
            starts.len(),
            per_macro.len(),
        ));
    }
    let mut out = Vec::with_capacity(len);
    for (span, &v) in spans(starts, len).zip(per_macro) {
        out.extend(std::iter::repeat_n(v, span.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 6.0, 5.0];
    const STARTS: [u32; 3] = [0, 3, 5]; // macro actions [1 2 3] [4 6] [5]

    #[test]
    fn equal_is_the_mean() {
        // (1+2+3)/3 = 2; (4+6)/2 = 5; 5.
        assert_eq!(
            aggregate(&X, &STARTS, ValueFunction::Equal).unwrap(),
            vec![2.0, 5.0, 5.0]
        );
    }

    #[test]
    fn unit_is_the_last_token() {
        assert_eq!(
            aggregate(&X, &STARTS, ValueFunction::Unit).unwrap(),
            vec![3.0, 6.0, 5.0]
        );
    }

    #[test]
    fn position_weighs_early_tokens() {
        // [1 2 3]: weights 1, 1/2, 1/3 → sum 11/6 → 6/11, 3/11, 2/11;
        //   1·6/11 + 2·3/11 + 3·2/11 = 18/11.
        // [4 6]: weights 1, 1/2 → 2/3, 1/3; 4·2/3 + 6·1/3 = 14/3.
        let got = aggregate(&X, &STARTS, ValueFunction::Position).unwrap();
        let want = [18.0 / 11.0, 14.0 / 3.0, 5.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        let w = ValueFunction::Position.weights(3);
        assert!((w[0] - 6.0 / 11.0).abs() < 1e-15 && (w[2] - 2.0 / 11.0).abs() < 1e-15);
    }

    #[test]
    fn single_token_macro_actions_are_exact() {
        let x = [0.1f32, -3.7, 1e-8, 12345.679, -0.0];
        let starts = [0, 1, 2, 3, 4];
        for vf in [
            ValueFunction::Equal,
            ValueFunction::Unit,
            ValueFunction::Position,
        ] {
            let got = aggregate(&x, &starts, vf).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&x), "{vf}");
        }
    }

    #[test]
    fn empty_and_bad_inputs() {
        assert_eq!(
            aggregate(&[], &[], ValueFunction::Equal).unwrap(),
            Vec::<f32>::new()
        );
        let err = aggregate(&[1.0, f32::NAN, 2.0], &[0, 2], ValueFunction::Equal).unwrap_err();
        assert_eq!(err.to_string(), "per-token values[1] is not finite");
        let err = aggregate(&[1.0, 2.0, 3.0], &[0, 1], ValueFunction::Equal).unwrap_err();
        assert!(err.to_string().contains("not a macro action of its own"));
    }

    #[test]
    fn expand_golden() {
        let got = expand(&[7.0, 8.0, 9.0], &STARTS, 6).unwrap();
        assert_eq!(got, vec![7.0, 7.0, 7.0, 8.0, 8.0, 9.0]);
        assert_eq!(expand(&[], &[], 0).unwrap(), Vec::<f32>::new());
        let err = expand(&[1.0], &STARTS, 6).unwrap_err().to_string();
        assert_eq!(err, "per-macro-action values has length 1, expected 3");
    }

    #[test]
    fn value_function_round_trips() {
        for s in ["equal", "unit", "position"] {
            assert_eq!(s.parse::<ValueFunction>().unwrap().to_string(), s);
        }
        let err = "mean".parse::<ValueFunction>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid value function \"mean\" (expected equal, unit or position)"
        );
    }
}
