//! One value per macro action from per-token values (`modeling_macro_action`),
//! and one reward per macro action from per-token rewards.

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

/// How a macro action's reward is made from its tokens' rewards (the KL
/// penalty −β·k on every token, plus the clipped score on the last token,
/// which is a macro action of its own and so keeps its score under both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MacroKl {
    /// Aggregated with the value function, like the values (the released
    /// `modeling_macro_action`): with `equal` the mean of the tokens'
    /// penalties, so a macro action of n tokens is charged β/n per token;
    /// with `position` a weighted mean, likewise β/n on average; with
    /// `unit` only its last token's penalty, so the others go unpaid.
    #[default]
    Mean,
    /// The sum of the tokens' rewards, whatever the value function: every
    /// token pays β, as in token-level PPO, and a macro action's reward is
    /// what its tokens collect while it runs (discounted inside it by γ per
    /// token under `--macro-lambda per-token`).
    Sum,
}

impl MacroKl {
    pub fn as_str(self) -> &'static str {
        match self {
            MacroKl::Mean => "mean",
            MacroKl::Sum => "sum",
        }
    }
}

impl fmt::Display for MacroKl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MacroKl {
    type Err = RlError;

    fn from_str(s: &str) -> Result<Self, RlError> {
        match s {
            "mean" => Ok(MacroKl::Mean),
            "sum" => Ok(MacroKl::Sum),
            _ => Err(RlError::ParseMacroKl(s.to_string())),
        }
    }
}

/// One reward per macro action. `Mean` is [`aggregate`] with `vf`; `Sum`
/// is `Σ_i γ_tok^i · r_(start + i)` over the macro action's tokens, with
/// `token_discount` γ_tok the discount between two tokens inside a macro
/// action (1 when a macro action is one step of the discount, γ when the
/// discount runs per token). Sums run in f64 and round once, and a
/// one-token macro action gives back its token's reward bit for bit, so
/// `fixed:1` is token-level PPO under both.
pub fn macro_rewards(
    token_rewards: &[f32],
    starts: &[u32],
    vf: ValueFunction,
    macro_kl: MacroKl,
    token_discount: f32,
) -> Result<Vec<f32>, RlError> {
    match macro_kl {
        MacroKl::Mean => aggregate(token_rewards, starts, vf),
        MacroKl::Sum => {
            validate_starts(starts, token_rewards.len())?;
            check_finite("per-token rewards", token_rewards)?;
            Ok(spans(starts, token_rewards.len())
                .map(|span| match &token_rewards[span] {
                    [only] => *only,
                    tokens => {
                        let mut discount = 1.0f64;
                        let mut sum = 0.0f64;
                        for &r in tokens {
                            sum += discount * r as f64;
                            discount *= token_discount as f64;
                        }
                        sum as f32
                    }
                })
                .collect())
        }
    }
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
    fn macro_rewards_golden() {
        // Rewards [1 2 3] [4 6] [5] (starts 0, 3, 5).
        // mean (equal): the aggregate, [2, 5, 5].
        let mean = macro_rewards(&X, &STARTS, ValueFunction::Equal, MacroKl::Mean, 1.0).unwrap();
        assert_eq!(mean, vec![2.0, 5.0, 5.0]);
        // mean (unit): only the last token of each, [3, 6, 5].
        let unit = macro_rewards(&X, &STARTS, ValueFunction::Unit, MacroKl::Mean, 1.0).unwrap();
        assert_eq!(unit, vec![3.0, 6.0, 5.0]);
        // sum, under every value function: [1+2+3, 4+6, 5] = [6, 10, 5].
        for vf in [
            ValueFunction::Equal,
            ValueFunction::Unit,
            ValueFunction::Position,
        ] {
            let sum = macro_rewards(&X, &STARTS, vf, MacroKl::Sum, 1.0).unwrap();
            assert_eq!(sum, vec![6.0, 10.0, 5.0], "{vf}");
        }
        // sum discounted by 0.5 per token inside a macro action:
        // 1 + 0.5·2 + 0.25·3 = 2.75; 4 + 0.5·6 = 7; 5.
        let disc = macro_rewards(&X, &STARTS, ValueFunction::Equal, MacroKl::Sum, 0.5).unwrap();
        assert_eq!(disc, vec![2.75, 7.0, 5.0]);
        // One token per macro action: the tokens themselves, −0.0 included.
        let x = [0.1f32, -3.7, -0.0];
        let sum = macro_rewards(&x, &[0, 1, 2], ValueFunction::Equal, MacroKl::Sum, 0.9).unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&sum), bits(&x));
        for s in ["mean", "sum"] {
            assert_eq!(s.parse::<MacroKl>().unwrap().to_string(), s);
        }
        let err = "total".parse::<MacroKl>().unwrap_err().to_string();
        assert_eq!(err, "invalid macro KL \"total\" (expected mean or sum)");
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
