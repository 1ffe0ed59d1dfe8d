//! Generalised advantage estimation, over tokens or over macro actions.
//!
//! ```
//! use marlhf_rl::{gae, macro_advantages, MacroCredit};
//!
//! // The reward model's score arrives on the last token; γ = 1, λ = 0.5:
//! // δ = [0, 0, 0.5] and A_t = δ_t + γλ·A_{t+1}, from the end.
//! let (advantages, returns) = gae(&[0.0, 0.0, 1.0], &[0.5; 3], 1.0, 0.5).unwrap();
//! assert_eq!(advantages, [0.125, 0.25, 0.5]);
//! assert_eq!(returns, [0.625, 0.75, 1.0]); // advantages + values
//!
//! // One token more, the first two one macro action (starts 0, 2, 3): GAE
//! // runs over the three macro actions (their mean rewards and values) and
//! // every token gets its macro action's advantage.
//! let rewards = [0.0, 0.0, 0.0, 1.0];
//! let credit = MacroCredit { gamma: 1.0, lambda: 0.5, ..MacroCredit::default() };
//! let m = macro_advantages(&rewards, &[0.5; 4], &[0, 2, 3], &credit).unwrap();
//! assert_eq!(m.macro_advantages, [0.125, 0.25, 0.5]);
//! assert_eq!(m.advantages, [0.125, 0.125, 0.25, 0.5]);
//! ```

use std::fmt;
use std::str::FromStr;

use crate::aggregate::{aggregate, expand, macro_rewards, MacroKl, ValueFunction};
use crate::error::{check_finite, check_param, RlError};
use crate::segment::spans;

/// GAE over one sequence of steps (`get_advantages_and_returns`): the value
/// after the last step is 0 (the response has ended), and
/// `returns = advantages + values`.
///
/// The arithmetic is the reference's, in f32 and in its order:
/// `δ_t = r_t + γ·V_{t+1} − V_t`, `A_t = δ_t + (γλ)·A_{t+1}`.
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    gamma: f32,
    lambda: f32,
) -> Result<(Vec<f32>, Vec<f32>), RlError> {
    gae_over_durations(rewards, values, None, gamma, lambda)
}

/// [`gae`] over steps of different durations: step `k` lasting `d_k`
/// tokens discounts what follows it by `γ^d_k` and mixes the λ-return by
/// `λ^d_k`: `δ_k = r_k + γ^d_k·V_{k+1} − V_k`,
/// `A_k = δ_k + (γ^d_k·λ^d_k)·A_{k+1}`. So `A_k` weighs the TD error of a
/// later step by (γλ) to the number of tokens between their starts, as
/// token-level GAE does. `None` (or every duration 1) is [`gae`] bit for
/// bit: `x^1` is `x`.
pub fn gae_over_durations(
    rewards: &[f32],
    values: &[f32],
    durations: Option<&[u32]>,
    gamma: f32,
    lambda: f32,
) -> Result<(Vec<f32>, Vec<f32>), RlError> {
    if values.len() != rewards.len() {
        return Err(RlError::length("values", rewards.len(), values.len()));
    }
    if let Some(d) = durations {
        if d.len() != rewards.len() {
            return Err(RlError::length("durations", rewards.len(), d.len()));
        }
        if d.contains(&0) {
            return Err(RlError::param("durations", "a step lasts at least 1 token"));
        }
    }
    check_finite("rewards", rewards)?;
    check_finite("values", values)?;
    check_param("gamma", gamma, (0.0..=1.0).contains(&gamma))?;
    check_param("lambda", lambda, (0.0..=1.0).contains(&lambda))?;

    let n = rewards.len();
    let mut advantages = vec![0.0f32; n];
    let mut last_gae = 0.0f32;
    for t in (0..n).rev() {
        let (g, l) = match durations {
            Some(d) => (power(gamma, d[t]), power(lambda, d[t])),
            None => (gamma, lambda),
        };
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + g * next_value - values[t];
        last_gae = delta + g * l * last_gae;
        advantages[t] = last_gae;
    }
    check_finite("advantages", &advantages)?;
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    Ok((advantages, returns))
}

/// `x^n` by repeated multiplication from `x`, so `x^1` is `x` exactly.
fn power(x: f32, n: u32) -> f32 {
    (1..n).fold(x, |acc, _| acc * x)
}

/// How far GAE over macro actions looks back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MacroLambda {
    /// γ and λ apply once per macro action, whatever its length (the paper
    /// and its released code): λ = 0.95 over macro actions of 5 tokens
    /// reaches as far back as λ ≈ 0.99 over tokens.
    #[default]
    PerMacro,
    /// γ and λ are per token: a macro action of n tokens discounts by γ^n
    /// and λ^n ([`gae_over_durations`]), so every termination condition
    /// looks back as many tokens as token-level PPO with the same λ.
    PerToken,
}

impl MacroLambda {
    pub fn as_str(self) -> &'static str {
        match self {
            MacroLambda::PerMacro => "per-macro",
            MacroLambda::PerToken => "per-token",
        }
    }
}

impl fmt::Display for MacroLambda {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MacroLambda {
    type Err = RlError;

    fn from_str(s: &str) -> Result<Self, RlError> {
        match s {
            "per-macro" => Ok(MacroLambda::PerMacro),
            "per-token" => Ok(MacroLambda::PerToken),
            _ => Err(RlError::ParseMacroLambda(s.to_string())),
        }
    }
}

/// The settings of credit assignment over macro actions. `Default` is the
/// paper's (equal value function, rewards aggregated like values, γ and λ
/// per macro action, γ = 1, λ = 0.95).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MacroCredit {
    pub value_function: ValueFunction,
    pub macro_kl: MacroKl,
    pub macro_lambda: MacroLambda,
    pub gamma: f32,
    pub lambda: f32,
}

impl Default for MacroCredit {
    fn default() -> Self {
        MacroCredit {
            value_function: ValueFunction::Equal,
            macro_kl: MacroKl::Mean,
            macro_lambda: MacroLambda::PerMacro,
            gamma: 1.0,
            lambda: 0.95,
        }
    }
}

/// Advantages and returns of one response, per macro action and per token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MacroAdvantages {
    /// One per macro action.
    pub macro_advantages: Vec<f32>,
    /// One per macro action.
    pub macro_returns: Vec<f32>,
    /// One per token: its macro action's advantage (the actor's target).
    pub advantages: Vec<f32>,
    /// One per token: its macro action's return (the critic's target).
    pub returns: Vec<f32>,
}

/// MA-PPO's credit assignment for one response: aggregate the per-token
/// rewards and values into macro actions, run GAE over the macro actions,
/// and hand every token its macro action's advantage and return.
///
/// Values are aggregated with the value function. Rewards, with
/// [`MacroKl::Mean`], are too (as in the reference, `modeling_macro_action`
/// applied to both), which with `equal` makes a macro action's KL penalty
/// the mean over its tokens; with [`MacroKl::Sum`] they are summed. The
/// reward model's score is untouched either way because the last token is
/// a macro action of its own. [`MacroLambda`] says whether γ and λ apply
/// per macro action or per token. With one macro action per token
/// (`fixed:1`) every aggregate is its token and this is token-level GAE,
/// bit for bit, under every setting.
pub fn macro_advantages(
    token_rewards: &[f32],
    token_values: &[f32],
    starts: &[u32],
    credit: &MacroCredit,
) -> Result<MacroAdvantages, RlError> {
    let len = token_rewards.len();
    if token_values.len() != len {
        return Err(RlError::length("values", len, token_values.len()));
    }
    check_finite("rewards", token_rewards)?;
    check_finite("values", token_values)?;
    let per_token = credit.macro_lambda == MacroLambda::PerToken;
    let inner_discount = if per_token { credit.gamma } else { 1.0 };
    let vf = credit.value_function;
    let macro_rewards = macro_rewards(token_rewards, starts, vf, credit.macro_kl, inner_discount)?;
    let macro_values = aggregate(token_values, starts, vf)?;
    let durations: Vec<u32> = spans(starts, len).map(|s| s.len() as u32).collect();
    let (macro_advantages, macro_returns) = gae_over_durations(
        &macro_rewards,
        &macro_values,
        per_token.then_some(durations.as_slice()),
        credit.gamma,
        credit.lambda,
    )?;
    Ok(MacroAdvantages {
        advantages: expand(&macro_advantages, starts, len)?,
        returns: expand(&macro_returns, starts, len)?,
        macro_advantages,
        macro_returns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_golden() {
        // r = [0, 0, 1], V = [0.5, 0.25, 0.5], γ = 1, λ = 0.5 (γλ = 0.5)
        // t=2: δ = 1 + 0 − 0.5 = 0.5;       A = 0.5
        // t=1: δ = 0 + 0.5 − 0.25 = 0.25;   A = 0.25 + 0.5·0.5 = 0.5
        // t=0: δ = 0 + 0.25 − 0.5 = −0.25;  A = −0.25 + 0.5·0.5 = 0
        // returns = A + V = [0.5, 0.75, 1.0]
        let (a, r) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.25, 0.5], 1.0, 0.5).unwrap();
        assert_eq!(a, vec![0.0, 0.5, 0.5]);
        assert_eq!(r, vec![0.5, 0.75, 1.0]);
    }

    #[test]
    fn gae_discounts() {
        // r = [1, 2], V = [1, 1], γ = 0.5, λ = 1 (γλ = 0.5)
        // t=1: δ = 2 + 0 − 1 = 1;            A = 1
        // t=0: δ = 1 + 0.5·1 − 1 = 0.5;      A = 0.5 + 0.5·1 = 1
        let (a, r) = gae(&[1.0, 2.0], &[1.0, 1.0], 0.5, 1.0).unwrap();
        assert_eq!(a, vec![1.0, 1.0]);
        assert_eq!(r, vec![2.0, 2.0]);
        // λ = 0 is one-step TD: A_0 = δ_0 = 0.5.
        let (a, _) = gae(&[1.0, 2.0], &[1.0, 1.0], 0.5, 0.0).unwrap();
        assert_eq!(a, vec![0.5, 1.0]);
    }

    #[test]
    fn gae_empty_and_bad() {
        assert_eq!(gae(&[], &[], 1.0, 0.95).unwrap(), (vec![], vec![]));
        let err = gae(&[1.0], &[1.0, 2.0], 1.0, 0.95).unwrap_err().to_string();
        assert_eq!(err, "values has length 2, expected 1");
        let err = gae(&[1.0, f32::INFINITY], &[1.0, 2.0], 1.0, 0.95).unwrap_err();
        assert_eq!(err.to_string(), "rewards[1] is not finite");
        let err = gae(&[1.0], &[1.0], 1.5, 0.95).unwrap_err().to_string();
        assert_eq!(err, "invalid gamma: 1.5 is out of range");
        let err = gae(&[1.0], &[1.0], 1.0, f32::NAN).unwrap_err().to_string();
        assert_eq!(err, "invalid lambda: NaN is out of range");
    }

    #[test]
    fn macro_golden() {
        // 5 tokens, macro actions [0 1 2] [3] [4], equal value function.
        // rewards [0.25, −0.25, 0.5, 0, 1]   → macro rewards [1/6, 0, 1]
        //   ((0.25 − 0.25 + 0.5)/3 = 0.5/3 = 1/6)
        // values  [1, 2, 3, 0.5, 1]         → macro values  [2, 0.5, 1]
        // GAE, γ = 1, λ = 0.5:
        //   k=2: δ = 1 − 1 = 0;               A = 0
        //   k=1: δ = 0 + 1 − 0.5 = 0.5;       A = 0.5 + 0.5·0 = 0.5
        //   k=0: δ = 1/6 + 0.5 − 2 = −4/3;    A = −4/3 + 0.5·0.5 = −13/12
        // returns: [−13/12 + 2, 1, 1] = [11/12, 1, 1]
        let rewards = [0.25, -0.25, 0.5, 0.0, 1.0];
        let values = [1.0, 2.0, 3.0, 0.5, 1.0];
        let m = macro_advantages(&rewards, &values, &[0, 3, 4], &credit(1.0, 0.5)).unwrap();
        let close = |got: &[f32], want: &[f32]| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        };
        let a0 = -13.0 / 12.0;
        close(&m.macro_advantages, &[a0, 0.5, 0.0]);
        close(&m.macro_returns, &[11.0 / 12.0, 1.0, 1.0]);
        close(&m.advantages, &[a0, a0, a0, 0.5, 0.0]);
        close(
            &m.returns,
            &[11.0 / 12.0, 11.0 / 12.0, 11.0 / 12.0, 1.0, 1.0],
        );
    }

    #[test]
    fn macro_unit_and_empty() {
        // Unit: macro values are the last tokens: [3, 0.5, 1]; rewards [0.5, 0, 1].
        // k=2: A = 0; k=1: δ = 0 + 1 − 0.5 = 0.5, A = 0.5;
        // k=0: δ = 0.5 + 0.5 − 3 = −2, A = −2 + 0.5·0.5 = −1.75.
        let unit = MacroCredit {
            value_function: ValueFunction::Unit,
            ..credit(1.0, 0.5)
        };
        let m = macro_advantages(
            &[0.25, -0.25, 0.5, 0.0, 1.0],
            &[1.0, 2.0, 3.0, 0.5, 1.0],
            &[0, 3, 4],
            &unit,
        )
        .unwrap();
        assert_eq!(m.macro_advantages, vec![-1.75, 0.5, 0.0]);
        assert_eq!(m.returns, vec![1.25, 1.25, 1.25, 1.0, 1.0]);
        let empty = macro_advantages(&[], &[], &[], &MacroCredit::default()).unwrap();
        assert_eq!(empty, MacroAdvantages::default());
    }

    /// Equal value function, rewards as released, γ and λ per macro action.
    fn credit(gamma: f32, lambda: f32) -> MacroCredit {
        MacroCredit {
            gamma,
            lambda,
            ..MacroCredit::default()
        }
    }

    // 7 tokens in macro actions of unequal lengths 4, 2, 1 (starts 0, 4, 6).
    const REWARDS: [f32; 7] = [0.5, -0.25, 0.25, 0.5, 0.25, 0.25, 1.0];
    const VALUES: [f32; 7] = [1.0, 2.0, 3.0, 2.0, 0.5, 1.5, 0.5];
    const STARTS: [u32; 3] = [0, 4, 6];

    #[test]
    fn macro_lambda_per_token_golden() {
        // Equal: macro rewards [1/4, 0.5/2, 1] = [0.25, 0.25, 1], macro
        // values [8/4, 2/2, 0.5] = [2, 1, 0.5]. γ = 1, λ = 0.5.
        // per-macro (λ each):
        //   k=2: δ = 1 − 0.5 = 0.5;            A = 0.5
        //   k=1: δ = 0.25 + 0.5 − 1 = −0.25;   A = −0.25 + 0.5·0.5 = 0
        //   k=0: δ = 0.25 + 1 − 2 = −0.75;     A = −0.75 + 0.5·0 = −0.75
        // per-token (λ^4, λ^2, λ^1 = 1/16, 1/4, 1/2):
        //   k=2: A = 0.5
        //   k=1: A = −0.25 + 0.25·0.5 = −0.125
        //   k=0: A = −0.75 + (1/16)·(−0.125) = −0.7578125
        let per_macro = macro_advantages(&REWARDS, &VALUES, &STARTS, &credit(1.0, 0.5)).unwrap();
        assert_eq!(per_macro.macro_advantages, vec![-0.75, 0.0, 0.5]);
        let per_token = MacroCredit {
            macro_lambda: MacroLambda::PerToken,
            ..credit(1.0, 0.5)
        };
        let m = macro_advantages(&REWARDS, &VALUES, &STARTS, &per_token).unwrap();
        assert_eq!(m.macro_advantages, vec![-0.7578125, -0.125, 0.5]);
        assert_eq!(m.macro_returns, vec![2.0 - 0.7578125, 0.875, 1.0]);
        let a0 = -0.7578125;
        assert_eq!(m.advantages, vec![a0, a0, a0, a0, -0.125, -0.125, 0.5]);
    }

    #[test]
    fn macro_gamma_per_token_and_kl_sum_golden() {
        // γ = 0.5, λ = 1, per-token, rewards summed with γ inside a macro:
        //   macro 0: 0.5 − 0.5·0.25 + 0.25·0.25 + 0.125·0.5 = 0.5
        //   macro 1: 0.25 + 0.5·0.25 = 0.375;   macro 2: 1
        // values [2, 1, 0.5]; discounts γ^4, γ^2, γ = 1/16, 1/4, 1/2.
        //   k=2: δ = 1 − 0.5 = 0.5;                   A = 0.5
        //   k=1: δ = 0.375 + 0.25·0.5 − 1 = −0.5;     A = −0.5 + 0.25·0.5 = −0.375
        //   k=0: δ = 0.5 + (1/16)·1 − 2 = −1.4375;    A = −1.4375 + (1/16)·(−0.375)
        //        = −1.4609375
        // With λ = 1 that is the discounted return from token 0,
        // Σ γ^t r_t = 0.5 + (1/16)·0.25 + (1/32)·0.25 + (1/64)·1 = 0.5390625,
        // minus the macro action's value 2.
        let c = MacroCredit {
            macro_kl: MacroKl::Sum,
            macro_lambda: MacroLambda::PerToken,
            ..credit(0.5, 1.0)
        };
        let m = macro_advantages(&REWARDS, &VALUES, &STARTS, &c).unwrap();
        assert_eq!(m.macro_advantages, vec![-1.4609375, -0.375, 0.5]);
        assert_eq!(m.macro_returns[0], 0.5390625);
        // Summed rewards, γ = 1, λ = 0.5 per macro action: macro rewards
        // [1, 0.5, 1], values [2, 1, 0.5]:
        //   k=2: A = 0.5; k=1: δ = 0.5 + 0.5 − 1 = 0, A = 0.25;
        //   k=0: δ = 1 + 1 − 2 = 0, A = 0.125.
        let c = MacroCredit {
            macro_kl: MacroKl::Sum,
            ..credit(1.0, 0.5)
        };
        let m = macro_advantages(&REWARDS, &VALUES, &STARTS, &c).unwrap();
        assert_eq!(m.macro_advantages, vec![0.125, 0.25, 0.5]);
        assert_eq!(m.returns, vec![2.125, 2.125, 2.125, 2.125, 1.25, 1.25, 1.0]);
    }

    #[test]
    fn durations_of_one_are_gae_bit_for_bit() {
        let r = [0.3f32, -0.7, 0.11, 2.5];
        let v = [0.9f32, -1.3, 0.21, 0.05];
        let plain = gae(&r, &v, 0.97, 0.93).unwrap();
        let ones = gae_over_durations(&r, &v, Some(&[1, 1, 1, 1]), 0.97, 0.93).unwrap();
        assert_eq!(plain, ones);
        let err = gae_over_durations(&r, &v, Some(&[1, 0, 1, 1]), 1.0, 0.95).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid durations: a step lasts at least 1 token"
        );
        for s in ["per-macro", "per-token"] {
            assert_eq!(s.parse::<MacroLambda>().unwrap().to_string(), s);
        }
        assert!("token".parse::<MacroLambda>().is_err());
    }
}

/// Advantages whitened over every token of a batch, as TRL, verl and
/// CleanRL do before the policy loss: `(A − mean) / √(var + 1e-8)` with the
/// unbiased variance over all tokens of all rows. Removes a bias that a
/// poorly fitted critic puts into every advantage (which would otherwise
/// reinforce whatever was sampled), and sets their scale. Rows keep their
/// lengths; with fewer than two tokens in all, the rows come back
/// centred only.
pub fn whiten(rows: &[&[f32]]) -> Vec<Vec<f32>> {
    let n: usize = rows.iter().map(|r| r.len()).sum();
    if n == 0 {
        return rows.iter().map(|r| r.to_vec()).collect();
    }
    let mean = rows
        .iter()
        .flat_map(|r| r.iter())
        .map(|&x| x as f64)
        .sum::<f64>()
        / n as f64;
    let scale = if n >= 2 {
        let var = rows
            .iter()
            .flat_map(|r| r.iter())
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        1.0 / (var + 1e-8).sqrt()
    } else {
        1.0
    };
    rows.iter()
        .map(|r| {
            r.iter()
                .map(|&x| ((x as f64 - mean) * scale) as f32)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod whiten_tests {
    use super::whiten;

    #[test]
    fn whiten_golden() {
        // Tokens 1, 2, 3 | 6: mean 3, unbiased var (4 + 1 + 0 + 9)/3 = 14/3,
        // sd 2.1602469; whitened −0.9258201, −0.4629100, 0 | 1.3887301.
        let w = whiten(&[&[1.0, 2.0, 3.0], &[6.0], &[]]);
        let want = [vec![-0.925_820_1, -0.462_91, 0.0], vec![1.388_73], vec![]];
        for (g, w) in w.iter().zip(&want) {
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        assert_eq!(whiten(&[&[5.0]]), vec![vec![0.0]]);
        assert_eq!(whiten(&[&[]]), vec![Vec::<f32>::new()]);
    }
}
