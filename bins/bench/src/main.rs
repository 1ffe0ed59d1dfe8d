//! `marlhf-bench`: training and sampling throughput of the tiny Llama
//! configuration the PyTorch reference was measured on (hidden 256, 4
//! layers, 8 heads, vocab 8192, MLP 688), printed with the reference figure
//! and the ratio to this machine's previous run.

use std::path::PathBuf;

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::Parser;
use marlhf_model::adamw::{AdamW, AdamWConfig};
use marlhf_model::generate::{generate, SamplingConfig};
use marlhf_model::lm::Scored;
use marlhf_model::{Model, ModelConfig, Params};

/// Measure training tokens/s (batch 8×256, forward + backward + AdamW) and
/// sampling new tokens/s (128 new tokens at batch 1 and 16).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Timed repetitions of each measurement (the first run is a warm-up)
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where the previous figures are kept, for the ratio column
    #[arg(long, default_value = "target/bench-last.json")]
    history: PathBuf,
    /// Run only the measurements whose name contains this text
    #[arg(long)]
    only: Option<String>,
}

struct Row {
    name: &'static str,
    value: f64,
    unit: &'static str,
    reference: f64,
}

fn model() -> Result<Model> {
    let cfg = ModelConfig::tiny_llama(8192, 256, 4, 8, 688);
    let params = Params::init(&cfg, 1234, &Device::Cpu)?;
    Model::new(cfg, params)
}

fn best_of<F: FnMut() -> Result<f64>>(reps: usize, mut f: F) -> Result<f64> {
    f()?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        best = best.min(f()?);
    }
    Ok(best)
}

fn train_tokens_per_s(reps: usize) -> Result<f64> {
    let m = model()?;
    let seqs: Vec<Vec<u32>> = (0..8)
        .map(|r| {
            (0..256)
                .map(|i| ((r * 131 + i * 17) % 8000 + 3) as u32)
                .collect()
        })
        .collect();
    let batch = Scored {
        seqs,
        starts: vec![1; 8],
    };
    let vars = m.params.vars();
    let mut opt = AdamW::new(AdamWConfig::default());
    let secs = best_of(reps, || {
        let t = Instant::now();
        let (lp, _) = m.token_logprobs(&batch)?;
        let loss = (lp.sum_all()?.neg()? / lp.elem_count() as f64)?;
        let grads = loss.backward()?;
        opt.step(&vars, &grads, 1e-4, 1.0)?;
        Ok(t.elapsed().as_secs_f64())
    })?;
    Ok(8.0 * 256.0 / secs)
}

fn sample_tokens_per_s(batch: usize, reps: usize) -> Result<f64> {
    let m = model()?;
    let prompts: Vec<Vec<u32>> = (0..batch).map(|r| vec![1, 5 + r as u32, 9]).collect();
    // No EOS, so every row generates all 128 tokens.
    let cfg = SamplingConfig {
        max_new_tokens: 128,
        temperature: 0.8,
        top_k: Some(50),
        top_p: None,
        seed: 7,
        eos: vec![],
        pad: 0,
    };
    let secs = best_of(reps, || {
        let t = Instant::now();
        let out = generate(&m.llama, &prompts, &cfg)?;
        assert!(out.tokens.iter().all(|t| t.len() == 128));
        Ok(t.elapsed().as_secs_f64())
    })?;
    Ok((batch * 128) as f64 / secs)
}

fn main() {
    marlhf_cli::run("bench", || {
        let cli = Cli::parse();
        let _ = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?;
        let wanted = |name: &str| {
            cli.only
                .as_deref()
                .map(|o| name.contains(o))
                .unwrap_or(true)
        };
        let mut rows = Vec::new();
        let specs: [(&'static str, f64, Option<usize>); 3] = [
            ("train 8x256 (fwd+bwd+AdamW)", 1340.0, None),
            ("sample 128 new, batch 1", 94.0, Some(1)),
            ("sample 128 new, batch 16", 525.0, Some(16)),
        ];
        for (name, reference, batch) in specs {
            if !wanted(name) {
                continue;
            }
            let value = match batch {
                None => train_tokens_per_s(cli.reps)?,
                Some(b) => sample_tokens_per_s(b, cli.reps)?,
            };
            rows.push(Row {
                name,
                value,
                unit: "tokens/s",
                reference,
            });
        }
        let previous: serde_json::Value = std::fs::read_to_string(&cli.history)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        println!(
            "{:<30} {:>12} {:>10} {:>14} {:>12}",
            "benchmark", "value", "unit", "vs PyTorch", "vs previous"
        );
        let mut now = previous.as_object().cloned().unwrap_or_default();
        for r in &rows {
            let prev = previous.get(r.name).and_then(|v| v.as_f64());
            println!(
                "{:<30} {:>12.1} {:>10} {:>13.2}x {:>12}",
                r.name,
                r.value,
                r.unit,
                r.value / r.reference,
                prev.map(|p| format!("{:.2}x", r.value / p))
                    .unwrap_or_else(|| "–".into())
            );
            now.insert(r.name.to_string(), serde_json::json!(r.value));
        }
        if let Some(dir) = cli.history.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(&cli.history, serde_json::to_string_pretty(&now)?)?;
        Ok(())
    })
}
