//! Pairwise reward modelling: −log σ(r_chosen − r_rejected), with the score
//! read by the value head at each sequence's last real token.

use anyhow::Result;
use candle_core::Tensor;
use marlhf_model::Model;

use crate::progress::Progress;
use crate::trainer::Objective;

/// A preference pair as token ids: the shared prompt, then each completion.
#[derive(Clone, Debug)]
pub struct Pair {
    pub id: u64,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

pub struct RewardModel {
    pub eval_batch: usize,
}

/// −log σ(x) = softplus(−x), computed stably as relu(−x) + log(1 + e^{−|x|}).
pub fn neg_log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let relu = x.neg()?.relu()?;
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((relu + tail)?)
}

/// Scores of chosen and rejected sequences, [B] each.
pub fn score_pairs(model: &Model, batch: &[&Pair]) -> Result<(Tensor, Tensor)> {
    let mut seqs: Vec<Vec<u32>> = batch.iter().map(|p| p.chosen.clone()).collect();
    seqs.extend(batch.iter().map(|p| p.rejected.clone()));
    let s = model.scores(&seqs)?;
    let b = batch.len();
    Ok((s.narrow(0, 0, b)?, s.narrow(0, b, b)?))
}

impl Objective for RewardModel {
    type Item = Pair;

    fn units(&self, _: &Pair) -> usize {
        1
    }

    fn length(&self, p: &Pair) -> usize {
        p.chosen.len().max(p.rejected.len())
    }

    fn loss_sum(&self, model: &Model, batch: &[&Pair]) -> Result<(Tensor, Vec<(String, f64)>)> {
        let (c, r) = score_pairs(model, batch)?;
        let margin = (&c - &r)?;
        let loss = neg_log_sigmoid(&margin)?.sum_all()?;
        let m: Vec<f32> = margin.to_vec1()?;
        let correct = m.iter().filter(|&&x| x > 0.0).count() as f64;
        let margin_sum: f64 = m.iter().map(|&x| x as f64).sum();
        Ok((
            loss,
            vec![("accuracy".into(), correct), ("margin".into(), margin_sum)],
        ))
    }

    fn evaluate(&self, model: &Model, items: &[Pair]) -> Result<Vec<(String, f64)>> {
        let (mut loss, mut correct, mut margin, mut chosen) = (0f64, 0usize, 0f64, 0f64);
        for chunk in items.chunks(self.eval_batch.max(1)) {
            let refs: Vec<&Pair> = chunk.iter().collect();
            let (c, r) = score_pairs(model, &refs)?;
            let d = (&c - &r)?;
            loss += neg_log_sigmoid(&d)?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            let d: Vec<f32> = d.to_vec1()?;
            correct += d.iter().filter(|&&x| x > 0.0).count();
            margin += d.iter().map(|&x| x as f64).sum::<f64>();
            chosen += c.to_vec1::<f32>()?.iter().map(|&x| x as f64).sum::<f64>();
        }
        let n = items.len().max(1) as f64;
        Ok(vec![
            ("val_loss".into(), loss / n),
            ("val_accuracy".into(), correct as f64 / n),
            ("val_margin".into(), margin / n),
            ("val_chosen_score".into(), chosen / n),
        ])
    }
}

pub struct RmOptions {
    pub data: std::path::PathBuf,
    /// The SFT checkpoint the reward model starts from.
    pub init: std::path::PathBuf,
    pub max_prompt_tokens: usize,
    pub max_completion_tokens: usize,
    pub val_fraction: f64,
    pub limit: Option<usize>,
    pub device: candle_core::Device,
    /// The dtype the model computes in (its weights stay f32).
    pub dtype: candle_core::DType,
    /// Train a LoRA adapter (and the value head) on the frozen `init`
    /// model instead of every weight.
    pub lora: Option<marlhf_model::lora::LoraSettings>,
    pub train: crate::TrainConfig,
}

pub struct RmReport {
    pub lengths: crate::encode::LengthReport,
    /// The parameters trained (all of them without LoRA).
    pub trainable: usize,
    pub identical_pairs: usize,
    pub train_pairs: usize,
    pub val_pairs: usize,
    pub outcome: crate::TrainOutcome,
}

pub fn run(opts: &RmOptions, progress: &dyn Progress) -> Result<RmReport> {
    use anyhow::bail;
    let rows = marlhf_data::read_pairs(&opts.data)?;
    let rows = match opts.limit {
        Some(n) => &rows[..n.min(rows.len())],
        None => &rows[..],
    };
    if rows.is_empty() {
        bail!("{}: no preference pairs to train on", opts.data.display());
    }
    let ck = match &opts.lora {
        Some(l) => marlhf_model::Checkpoint::load_lora(
            &opts.init,
            &opts.device,
            opts.dtype,
            l,
            opts.train.seed,
        )?,
        None => marlhf_model::Checkpoint::load_with(
            &opts.init,
            &opts.device,
            opts.dtype,
            marlhf_model::checkpoint::Use::Training,
        )?,
    };
    let mut model = ck.model;
    model.ensure_value_head(opts.train.seed)?;
    let tok = ck.tokenizer;
    let mut lengths = crate::encode::LengthReport::default();
    let mut identical = 0;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for r in rows {
        lengths.rows += 1;
        if r.chosen == r.rejected {
            // No preference to learn; counted and reported, not trained on.
            identical += 1;
            lengths.skip("chosen == rejected");
            continue;
        }
        let c = crate::encode::encode_pair(
            &tok,
            r.id,
            &r.prompt,
            &r.chosen,
            opts.max_prompt_tokens,
            opts.max_completion_tokens,
            &mut lengths,
        )?;
        // The prompt is shared: count its truncation once per pair.
        let mut second = crate::encode::LengthReport::default();
        let j = crate::encode::encode_pair(
            &tok,
            r.id,
            &r.prompt,
            &r.rejected,
            opts.max_prompt_tokens,
            opts.max_completion_tokens,
            &mut second,
        )?;
        lengths.completion_truncated += second.completion_truncated;
        for (reason, n) in second.skipped {
            for _ in 0..n {
                lengths.skip(&reason);
            }
        }
        let (Some(c), Some(j)) = (c, j) else { continue };
        let pair = Pair {
            id: r.id,
            chosen: c.sequence(),
            rejected: j.sequence(),
        };
        if pair.chosen == pair.rejected {
            lengths.skip("identical after truncation");
            continue;
        }
        if crate::sft::is_validation(r.id, opts.val_fraction, opts.train.seed) {
            val.push(pair);
        } else {
            train.push(pair);
        }
    }
    crate::encode::check_enough(
        &opts.data,
        "training pairs",
        train.len(),
        opts.train.batch_size,
        &lengths,
    )?;
    let obj = RewardModel {
        eval_batch: opts.train.batch_size,
    };
    let trainable = model.num_trainable();
    let tok_path = marlhf_model::checkpoint::tokenizer_dir(&opts.init)?
        .join(marlhf_model::checkpoint::TOKENIZER);
    let mut settings = crate::trainer::run_settings(
        train
            .iter()
            .chain(&val)
            .flat_map(|p| [&p.chosen[..], &p.rejected[..]]),
        val.len(),
        &model,
        opts.max_prompt_tokens,
        opts.max_completion_tokens,
        opts.val_fraction,
        opts.limit,
    );
    if let Some(l) = &opts.lora {
        // Recorded only for LoRA runs, so full runs' settings stay as they were.
        settings.insert("lora".into(), l.describe());
    }
    let outcome = crate::trainer::fit(
        &model,
        &tok_path,
        &train,
        &val,
        &obj,
        &opts.train,
        settings,
        progress,
    )?;
    Ok(RmReport {
        lengths,
        trainable,
        identical_pairs: identical,
        train_pairs: train.len(),
        val_pairs: val.len(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn neg_log_sigmoid_golden_values() {
        // −log σ(0) = ln 2; −log σ(2) = ln(1+e^−2); −log σ(−30) ≈ 30 (stable).
        let x = Tensor::new(&[0f32, 2.0, -30.0], &Device::Cpu).unwrap();
        let y: Vec<f32> = neg_log_sigmoid(&x).unwrap().to_vec1().unwrap();
        assert!((y[0] - std::f32::consts::LN_2).abs() < 1e-6);
        assert!((y[1] - (1.0 + (-2f32).exp()).ln()).abs() < 1e-6);
        assert!((y[2] - 30.0).abs() < 1e-5);
    }
}
