//! Supervised fine-tuning: next-token cross-entropy on completion tokens
//! only (the prompt is context, not a target), averaged over tokens.

use anyhow::Result;
use candle_core::Tensor;
use marlhf_model::lm::Scored;
use marlhf_model::Model;

use crate::encode::Example;
use crate::loop_::Objective;

pub struct Sft {
    /// Micro-batch size for held-out evaluation.
    pub eval_batch: usize,
}

fn scored(batch: &[&Example]) -> Scored {
    Scored {
        seqs: batch.iter().map(|e| e.sequence()).collect(),
        starts: batch.iter().map(|e| e.prompt.len()).collect(),
    }
}

impl Objective for Sft {
    type Item = Example;

    fn units(&self, e: &Example) -> usize {
        e.completion.len()
    }

    fn length(&self, e: &Example) -> usize {
        e.prompt.len() + e.completion.len()
    }

    fn loss_sum(&self, model: &Model, batch: &[&Example]) -> Result<(Tensor, Vec<(String, f64)>)> {
        let (lp, _) = model.token_logprobs(&scored(batch))?;
        Ok((lp.sum_all()?.neg()?, Vec::new()))
    }

    fn evaluate(&self, model: &Model, items: &[Example]) -> Result<Vec<(String, f64)>> {
        let mut nll = 0f64;
        let mut n = 0usize;
        for chunk in items.chunks(self.eval_batch.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let (lp, _) = model.token_logprobs(&scored(&refs))?;
            nll -= lp
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            n += chunk.iter().map(|e| e.completion.len()).sum::<usize>();
        }
        let loss = nll / n.max(1) as f64;
        Ok(vec![
            ("val_loss".into(), loss),
            ("val_perplexity".into(), loss.exp()),
        ])
    }
}
