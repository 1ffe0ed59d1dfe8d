//! Checks of the numbers a stage is given, before anything is read: NaN,
//! infinities and values outside a setting's range are refused in one line
//! naming the flag that set them.

/// What a numeric flag accepts (always a finite number).
#[derive(Clone, Copy, Debug)]
pub enum Range {
    /// > 0
    Positive,
    /// ≥ 0
    NonNegative,
    /// in [0, 1]
    Fraction,
}

/// Refuses NaN, infinities and values outside `range`, naming the flag.
pub fn check_range(flag: &str, v: f64, range: Range) -> anyhow::Result<()> {
    let (ok, what) = match range {
        Range::Positive => (v > 0.0, "a finite number > 0"),
        Range::NonNegative => (v >= 0.0, "a finite number ≥ 0"),
        Range::Fraction => ((0.0..=1.0).contains(&v), "a number in [0, 1]"),
    };
    if !(ok && v.is_finite()) {
        anyhow::bail!("{flag} must be {what}, got {v}");
    }
    Ok(())
}

/// The sampling flags every generating stage takes (rollout, eval), checked
/// before any model is loaded.
pub fn check_sampling(
    max_prompt_tokens: usize,
    max_new_tokens: usize,
    temperature: f64,
    top_p: f64,
) -> anyhow::Result<()> {
    if max_new_tokens == 0 || max_prompt_tokens == 0 {
        anyhow::bail!("--max-new-tokens and --max-prompt-tokens must be positive");
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        anyhow::bail!("--temperature must be a finite number ≥ 0");
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        anyhow::bail!("--top-p must be in (0, 1]");
    }
    Ok(())
}
