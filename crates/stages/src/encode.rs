//! Tokenizing the text tables with length limits, counting what the limits
//! did: rows are never dropped silently.

use std::fmt;

use anyhow::Result;
use marlhf_model::Tokenizer;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LengthReport {
    pub rows: usize,
    pub prompt_truncated: usize,
    pub completion_truncated: usize,
    /// Rows skipped, with the reason.
    pub skipped: Vec<(String, usize)>,
}

impl LengthReport {
    pub fn skip(&mut self, reason: &str) {
        match self.skipped.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => self.skipped.push((reason.to_string(), 1)),
        }
    }

    pub fn skipped_total(&self) -> usize {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for LengthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rows, prompts truncated (left) {}, completions truncated {}",
            self.rows, self.prompt_truncated, self.completion_truncated
        )?;
        for (reason, n) in &self.skipped {
            write!(f, ", skipped {n} ({reason})")?;
        }
        Ok(())
    }
}

/// Refuses a training set smaller than one batch, saying what happened to
/// the rows of `data` (skipped, and why).
pub fn check_enough(
    data: &std::path::Path,
    what: &str,
    n: usize,
    batch_size: usize,
    report: &LengthReport,
) -> Result<()> {
    if n < batch_size {
        anyhow::bail!(
            "{}: {n} {what} to train on, fewer than one batch of {batch_size} ({report})",
            data.display()
        );
    }
    Ok(())
}

/// A prompt and one completion as token ids.
#[derive(Clone, Debug)]
pub struct Example {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
}

impl Example {
    pub fn sequence(&self) -> Vec<u32> {
        let mut s = self.prompt.clone();
        s.extend_from_slice(&self.completion);
        s
    }
}

pub fn encode_pair(
    tok: &Tokenizer,
    id: u64,
    prompt: &str,
    completion: &str,
    max_prompt: usize,
    max_completion: usize,
    report: &mut LengthReport,
) -> Result<Option<Example>> {
    let p = tok.encode_prompt(prompt, max_prompt)?;
    let c = tok.encode_completion(completion, max_completion)?;
    report.prompt_truncated += usize::from(p.truncated);
    report.completion_truncated += usize::from(c.truncated);
    // A completion that is only EOS teaches nothing but to stop.
    if c.ids.len() <= 1 && !c.truncated {
        report.skip("empty completion");
        return Ok(None);
    }
    Ok(Some(Example {
        id,
        prompt: p.ids,
        completion: c.ids,
    }))
}
