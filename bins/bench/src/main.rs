//! `marlhf-bench`: training, sampling and rollout throughput of the tiny
//! Llama configuration (hidden 256, 4 layers, 8 heads, vocab 8192, MLP 688)
//! on the CPU, with the machine's GEMM rate measured first so that training
//! reads as a fraction of it. Given `--reference` (the JSON written by
//! bench/pytorch_reference.py, `make bench-compare`), it prints PyTorch's
//! figures from the same machine beside marlhf's, with the ratios.

#![forbid(unsafe_code)]

mod flops;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clap::Parser;
use marlhf_model::adamw::{AdamW, AdamWConfig};
use marlhf_model::generate::{generate, SamplingConfig};
use marlhf_model::lm::Scored;
use marlhf_model::{Model, ModelConfig, Params};
use serde_json::{json, Value};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Measure the GEMM rate, training tokens/s (batch 8×256, forward,
/// backward and AdamW), sampling new tokens/s (128 new tokens at batch 1
/// and 16) and a PPO rollout stage (16 prompts, 128 new tokens, four
/// scoring passes).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Timed repetitions of each measurement (after one warm-up; the best
    /// is kept)
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Run only the measurements whose name contains this text
    #[arg(long)]
    only: Option<String>,
    /// PyTorch's figures from this machine (bench/pytorch_reference.py
    /// --json), printed beside marlhf's with the ratio
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Where to write this run's figures as JSON
    #[arg(long, default_value = "target/bench/marlhf.json")]
    json: PathBuf,
}

const VOCAB: usize = 8192;
const HIDDEN: usize = 256;
const LAYERS: usize = 4;
const HEADS: usize = 8;
const MLP: usize = 688;
const TRAIN_ROWS: usize = 8;
const TRAIN_LEN: usize = 256;
const NEW_TOKENS: usize = 128;
const ROLLOUT_ROWS: usize = 16;
const GEMM_N: usize = 2048;

const GEMM: &str = "gemm 2048^3 f32";
const TRAIN: &str = "train 8x256 (fwd+bwd+AdamW)";
const TRAIN_LORA: &str = "train 8x256, LoRA r16 on a frozen base";
const SAMPLE1: &str = "sample 128 new, batch 1";
const SAMPLE16: &str = "sample 128 new, batch 16";
const ROLLOUT: &str = "rollout 16x128 (sample + 4 scorings)";

fn config() -> ModelConfig {
    ModelConfig::tiny_llama(VOCAB, HIDDEN, LAYERS, HEADS, MLP)
}

fn model(seed: u64) -> Result<Model> {
    let cfg = config();
    let params = Params::init(&cfg, seed, &Device::Cpu)?;
    Model::new(cfg, params)
}

fn best_of<F: FnMut() -> Result<f64>>(reps: usize, mut f: F) -> Result<f64> {
    f()?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

fn timed<F: FnMut() -> Result<()>>(mut f: F) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// GFLOP/s of one f32 GEMM of 2048² by 2048² through candle's matmul, the
/// kernel every marlhf matmul runs on: the machine's attainable peak.
fn gemm_gflops(reps: usize) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (GEMM_N, GEMM_N), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (GEMM_N, GEMM_N), &Device::Cpu)?;
    let secs = best_of(reps, || {
        timed(|| {
            a.matmul(&b)?;
            Ok(())
        })
    })?;
    Ok(2.0 * (GEMM_N as f64).powi(3) / secs / 1e9)
}

fn train_batch() -> Scored {
    let seqs: Vec<Vec<u32>> = (0..TRAIN_ROWS)
        .map(|r| {
            (0..TRAIN_LEN)
                .map(|i| ((r * 131 + i * 17) % 8000 + 3) as u32)
                .collect()
        })
        .collect();
    Scored {
        seqs,
        starts: vec![1; TRAIN_ROWS],
    }
}

/// Seconds per training step: mean token NLL, backward, clipped AdamW;
/// every weight, or with `lora_rank` a LoRA adapter on all seven
/// projections of the frozen model (the base's products through the same
/// fused GEMMs, without their weight gradients).
fn train_seconds(reps: usize, lora_rank: Option<usize>) -> Result<f64> {
    let mut m = model(1234)?;
    if let Some(rank) = lora_rank {
        let settings = marlhf_model::lora::LoraSettings {
            rank,
            alpha: 16.0,
            targets: marlhf_model::lora::Target::ALL.to_vec(),
            dropout: 0.0,
            rslora: false,
        };
        let adapter =
            marlhf_model::lora::Adapter::new(&settings, &m.config, "base".into(), 1, &Device::Cpu)?;
        m.set_adapter(Some(adapter))?;
    }
    let batch = train_batch();
    let vars = m.trainable();
    let mut opt = AdamW::new(AdamWConfig::default());
    best_of(reps, || {
        timed(|| {
            let (lp, _) = m.token_logprobs(&batch)?;
            let loss = (lp.sum_all()?.neg()? / lp.elem_count() as f64)?;
            let grads = loss.backward()?;
            opt.step(&vars, &grads, 1e-4, 1.0)?;
            Ok(())
        })
    })
}

fn sampling(seed: u64) -> SamplingConfig {
    // No EOS, so every row generates all its new tokens.
    SamplingConfig {
        max_new_tokens: NEW_TOKENS,
        temperature: 0.8,
        top_k: Some(50),
        top_p: None,
        seed,
        eos: vec![],
        pad: 0,
    }
}

fn sample_tokens_per_s(batch: usize, reps: usize) -> Result<f64> {
    let m = model(1234)?;
    let prompts: Vec<Vec<u32>> = (0..batch).map(|r| vec![1, 5 + r as u32, 9]).collect();
    let cfg = sampling(7);
    let secs = best_of(reps, || {
        timed(|| {
            let out = generate(&m.llama, &prompts, &cfg)?;
            assert!(out.tokens.iter().all(|t| t.len() == NEW_TOKENS));
            Ok(())
        })
    })?;
    Ok((batch * NEW_TOKENS) as f64 / secs)
}

/// The PPO rollout stage on one batch: sample from the actor, then the
/// actor's and the reference's log-probabilities of the new tokens (at the
/// sampling temperature), the critic's values and the reward model's
/// scores, as `marlhf-rollout` does. New tokens per second of the whole.
fn rollout_tokens_per_s(reps: usize) -> Result<f64> {
    let actor = model(1)?;
    let reference = model(2)?;
    let with_head = |seed: u64| -> Result<Model> {
        let cfg = config();
        let params = Params::init(&cfg, seed, &Device::Cpu)?;
        params.add_value_head(&cfg, seed)?;
        Model::new(cfg, params)
    };
    let critic = with_head(3)?;
    let rm = with_head(4)?;
    // Prompts of 24 to 62 tokens (the same as the PyTorch reference).
    let prompts: Vec<Vec<u32>> = (0..ROLLOUT_ROWS)
        .map(|r| {
            (0..24 + (r * 5) % 39)
                .map(|i| ((r * 37 + i * 11) % 8000 + 3) as u32)
                .collect()
        })
        .collect();
    let cfg = sampling(7);
    let secs = best_of(reps, || {
        timed(|| {
            let out = generate(&actor.llama, &prompts, &cfg)?;
            let scored = Scored {
                seqs: prompts
                    .iter()
                    .zip(&out.tokens)
                    .map(|(p, r)| p.iter().chain(r).copied().collect())
                    .collect(),
                starts: prompts.iter().map(Vec::len).collect(),
            };
            for m in [&actor, &reference] {
                m.token_logprobs_at(&scored, cfg.temperature)?
                    .0
                    .to_vec1::<f32>()?;
            }
            critic.token_values(&scored)?.0.to_vec1::<f32>()?;
            rm.scores(&scored.seqs)?.to_vec1::<f32>()?;
            Ok(())
        })
    })?;
    Ok((ROLLOUT_ROWS * NEW_TOKENS) as f64 / secs)
}

struct Row {
    name: &'static str,
    value: f64,
    unit: &'static str,
    /// The share of the GEMM rate the work runs at, where it is matmuls.
    of_peak: Option<f64>,
}

/// The CPU's model name with its family/model numbers and widest vector
/// extension (a VM may report only "AMD EPYC").
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| -> Option<String> {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd = if has("avx512f") {
        "AVX-512"
    } else if has("avx2") && has("fma") {
        "AVX2/FMA"
    } else {
        "no AVX2"
    };
    match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!("{name} (family {f}, model {m}, {simd})"),
        _ => format!("{name} ({simd})"),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    marlhf_cli::stage_main("bench", || {
        let cli = Cli::parse();
        let reference: Option<Value> = match &cli.reference {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("{}: cannot read the PyTorch figures", p.display()))?;
                Some(serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{}: not the JSON of bench/pytorch_reference.py",
                        p.display()
                    )
                })?)
            }
            None => None,
        };
        let wanted = |name: &str| cli.only.as_deref().is_none_or(|o| name.contains(o));
        let threads = rayon::current_num_threads();
        eprintln!(
            "{} · {threads} threads · 1-minute load average {} at start",
            cpu_model(),
            load_average()
        );

        let peak = gemm_gflops(cli.reps)?;
        let mut rows = vec![Row {
            name: GEMM,
            value: peak,
            unit: "GFLOP/s",
            of_peak: Some(1.0),
        }];
        if wanted(TRAIN) {
            let secs = train_seconds(cli.reps, None)?;
            let gflop = flops::train_step(&config(), TRAIN_ROWS, TRAIN_LEN, 1) / 1e9;
            rows.push(Row {
                name: TRAIN,
                value: (TRAIN_ROWS * TRAIN_LEN) as f64 / secs,
                unit: "tokens/s",
                of_peak: Some(gflop / secs / peak),
            });
        }
        if wanted(TRAIN_LORA) {
            let secs = train_seconds(cli.reps, Some(16))?;
            rows.push(Row {
                name: TRAIN_LORA,
                value: (TRAIN_ROWS * TRAIN_LEN) as f64 / secs,
                unit: "tokens/s",
                of_peak: None,
            });
        }
        for (name, batch) in [(SAMPLE1, 1), (SAMPLE16, 16)] {
            if wanted(name) {
                rows.push(Row {
                    name,
                    value: sample_tokens_per_s(batch, cli.reps)?,
                    unit: "tokens/s",
                    of_peak: None,
                });
            }
        }
        if wanted(ROLLOUT) {
            rows.push(Row {
                name: ROLLOUT,
                value: rollout_tokens_per_s(cli.reps)?,
                unit: "tokens/s",
                of_peak: None,
            });
        }

        let theirs =
            |name: &str| -> Option<f64> { reference.as_ref()?.get("figures")?.get(name)?.as_f64() };
        let pct = |f: Option<f64>| f.map(|f| format!("{:.0} %", 100.0 * f)).unwrap_or_default();
        match &reference {
            None => {
                println!(
                    "{:<38} {:>10} {:<9} {:>9}",
                    "benchmark", "marlhf", "unit", "of peak"
                );
                for r in &rows {
                    println!(
                        "{:<38} {:>10.1} {:<9} {:>9}",
                        r.name,
                        r.value,
                        r.unit,
                        pct(r.of_peak)
                    );
                }
            }
            Some(reference) => {
                let torch_peak = theirs(GEMM);
                let gflop = flops::train_step(&config(), TRAIN_ROWS, TRAIN_LEN, 1) / 1e9;
                println!(
                    "{:<38} {:>10} {:>9} {:>10} {:>9} {:>7} {:<9}",
                    "benchmark", "marlhf", "of peak", "PyTorch", "of peak", "ratio", "unit"
                );
                for r in &rows {
                    let t = theirs(r.name);
                    // PyTorch's share of its own (MKL) GEMM rate.
                    let t_peak = match (r.name, t, torch_peak) {
                        (GEMM, Some(_), _) => Some(1.0),
                        (TRAIN, Some(t), Some(p)) => {
                            Some(gflop * t / (TRAIN_ROWS * TRAIN_LEN) as f64 / p)
                        }
                        _ => None,
                    };
                    println!(
                        "{:<38} {:>10.1} {:>9} {:>10} {:>9} {:>7} {:<9}",
                        r.name,
                        r.value,
                        pct(r.of_peak),
                        t.map(|t| format!("{t:.1}")).unwrap_or_else(|| "–".into()),
                        pct(t_peak),
                        t.map(|t| format!("{:.2}x", r.value / t))
                            .unwrap_or_else(|| "–".into()),
                        r.unit
                    );
                }
                let s = |k: &str| reference.get(k).and_then(Value::as_str).unwrap_or("?");
                println!(
                    "PyTorch {} · transformers {} · {} threads · {} (peak: each side's own 2048² f32 GEMM)",
                    s("torch"),
                    s("transformers"),
                    reference.get("threads").and_then(Value::as_u64).unwrap_or(0),
                    s("blas")
                );
            }
        }

        let mut figures = serde_json::Map::new();
        for r in &rows {
            figures.insert(r.name.to_string(), json!(r.value));
        }
        let out = json!({
            "figures": figures,
            "cpu": cpu_model(),
            "threads": threads,
            "train_gflop_per_step": flops::train_step(&config(), TRAIN_ROWS, TRAIN_LEN, 1) / 1e9,
        });
        if let Some(dir) = cli.json.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        std::fs::write(&cli.json, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("{}: cannot write", cli.json.display()))?;
        Ok(())
    })
}
