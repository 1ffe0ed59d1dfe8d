//! `marlhf-bench`: training, sampling and rollout throughput of the tiny
//! Llama configuration (hidden 256, 4 layers, 8 heads, vocab 8192, MLP 688)
//! on the CPU or a GPU, with the device's GEMM rate measured first so that
//! training reads as a fraction of it; with `--gemma`, a training step and
//! sampling of a Gemma-2B-shaped model (its published config, random
//! weights). Given `--reference` (the JSON written by
//! bench/pytorch_reference.py, `make bench-compare` and the GPU check), it
//! prints PyTorch's figures from the same machine beside marlhf's, with the
//! ratios. `--parity DIR` instead checks log-probabilities against
//! transformers' references on the device (parity.rs).
//! With `--portable` (CPU) it times each workload in portable mode too
//! (`MARLHF_PORTABLE=1`), beside; `--fingerprint` instead prints hashes of
//! a small workload's numbers, to compare machines.

#![forbid(unsafe_code)]

mod fingerprint;
mod flops;
mod parity;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use marlhf_model::adamw::{AdamW, AdamWConfig};
use marlhf_model::generate::{generate, SamplingConfig};
use marlhf_model::kernels::blocking;
use marlhf_model::lm::Scored;
use marlhf_model::{device, Model, ModelConfig, Params};
use serde_json::{json, Value};

// The allocator is the binary's choice (see marlhf_cli's docs).
#[global_allocator]
static GLOBAL: marlhf_cli::MiMalloc = marlhf_cli::MiMalloc;

/// Measure the GEMM rate, training tokens/s (batch 8×256, forward,
/// backward and AdamW), sampling new tokens/s (128 new tokens at batch 1,
/// 16 and 64) and a PPO rollout stage (16 prompts, 128 new tokens, four
/// scoring passes); on a GPU with the peak memory each used.
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
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: auto (bf16 on cuda, f32 on cpu), f32, bf16 or f16.
    /// Trained models keep f32 master weights, as the stages do
    #[arg(long, default_value = marlhf_model::device::DEFAULT_DTYPE)]
    dtype: String,
    /// Also a Gemma-2B-shaped model (google/gemma-2b's config, random
    /// weights): a training step of 4×512 tokens and sampling at batch 1,
    /// 16 and 64, in --dtype
    #[arg(long)]
    gemma: bool,
    /// Gemma: layers (18 in Gemma-2B; fewer for a CPU dry run)
    #[arg(long, default_value_t = 18)]
    gemma_layers: usize,
    /// Gemma: vocabulary (256000 in Gemma-2B; smaller for a CPU dry run)
    #[arg(long, default_value_t = 256000)]
    gemma_vocab: usize,
    /// Gemma: hidden size, the MLP 8 times as wide (2048 in Gemma-2B;
    /// smaller for a CPU dry run)
    #[arg(long, default_value_t = 2048)]
    gemma_hidden: usize,
    /// Check log-probabilities against the transformers references of the
    /// Hugging Face fixtures in this directory (each subdirectory with a
    /// reference.json) on --device in f32, bf16 and f16, instead of
    /// measuring speed; writes the table to --json
    #[arg(long)]
    parity: Option<PathBuf>,
    /// Also time training, sampling and the rollout in portable mode
    /// (MARLHF_PORTABLE=1: GEMM depth blocks pinned to 512), each right
    /// after this machine's blocking, with the cost
    #[arg(long, conflicts_with = "reference")]
    portable: bool,
    /// Time nothing: print hashes of the numbers a small training step and
    /// sampling run produce (equal lines on two machines: equal bytes)
    #[arg(long, conflicts_with_all = ["reference", "portable", "only"])]
    fingerprint: bool,
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
const SAMPLE_BATCHES: [usize; 3] = [1, 16, 64];
const GEMMA_TRAIN_ROWS: usize = 4;
const GEMMA_TRAIN_LEN: usize = 512;

const TRAIN: &str = "train 8x256 (fwd+bwd+AdamW)";
const TRAIN_LORA: &str = "train 8x256, LoRA r16 on a frozen base";
const ROLLOUT: &str = "rollout 16x128 (sample + 4 scorings)";
const GEMMA_TRAIN: &str = "gemma-2b train 4x512 (fwd+bwd+AdamW)";

/// The GEMM of the peak figure: 2048³ on the CPU, 8192³ on a GPU (a
/// 2048³ product is over before a GPU is busy), in the compute dtype.
fn gemm_n(dev: &Device) -> usize {
    if dev.is_cpu() {
        2048
    } else {
        8192
    }
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "other",
    }
}

fn gemm_name(dev: &Device, dt: DType) -> String {
    let n = gemm_n(dev);
    format!("gemm {n}^3 {}", dtype_name(dt))
}

fn sample_name(batch: usize) -> String {
    format!("sample 128 new, batch {batch}")
}

fn gemma_sample_name(batch: usize) -> String {
    format!("gemma-2b sample 128 new, batch {batch}")
}

fn config() -> ModelConfig {
    ModelConfig::tiny_llama(VOCAB, HIDDEN, LAYERS, HEADS, MLP)
}

/// google/gemma-2b's published config.json (the parameter count is checked
/// in crates/model/tests/sizes.rs), with its layers, vocabulary and width
/// optionally cut for a dry run.
fn gemma_config(layers: usize, vocab: usize, hidden: usize) -> Result<ModelConfig> {
    let mlp = 8 * hidden;
    ModelConfig::from_json(&format!(
        r#"{{"architectures":["GemmaForCausalLM"],"model_type":"gemma","vocab_size":{vocab},
        "hidden_size":{hidden},"intermediate_size":{mlp},"num_hidden_layers":{layers},
        "num_attention_heads":8,"num_key_value_heads":1,"head_dim":256,
        "max_position_embeddings":8192,"rms_norm_eps":1e-6,"rope_theta":10000.0,
        "rope_scaling":null,"attention_bias":false,"attention_dropout":0.0,
        "hidden_act":"gelu","bos_token_id":2,"eos_token_id":1,"pad_token_id":0,
        "initializer_range":0.02,"torch_dtype":"bfloat16","use_cache":true,
        "transformers_version":"4.38.0.dev0"}}"#
    ))
}

/// Where and how the measurements run.
struct Setup {
    dev: Device,
    dtype: DType,
    /// `--portable`: time each workload again in portable mode.
    portable: bool,
}

impl Setup {
    /// A model with random weights: f32 master weights computing in the
    /// dtype when `trained`, else weights held in the compute dtype (as
    /// the stages hold frozen models).
    fn model(&self, cfg: &ModelConfig, seed: u64, trained: bool, head: bool) -> Result<Model> {
        let cpu = Params::init(cfg, seed, &Device::Cpu)?;
        if head {
            cpu.add_value_head(cfg, seed)?;
        }
        self.model_from(cfg, &cpu, trained)
    }

    /// [`Setup::model`] from weights made on the CPU (made once for the
    /// Gemma shape: 2.5 billion random numbers take a while).
    fn model_from(&self, cfg: &ModelConfig, cpu: &Params, trained: bool) -> Result<Model> {
        let storage = if trained { DType::F32 } else { self.dtype };
        let params = Params::empty();
        for (name, var) in cpu.vars() {
            params.insert(
                &name,
                var.as_tensor().to_dtype(storage)?.to_device(&self.dev)?,
            )?;
        }
        Model::with_dtype(cfg.clone(), params, self.dtype)
    }

    fn sync(&self) -> Result<()> {
        Ok(self.dev.synchronize()?)
    }
}

fn best_of<F: FnMut() -> Result<f64>>(reps: usize, mut f: F) -> Result<f64> {
    f()?; // warm-up (and on a GPU, the driver's compilation of the PTX)
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Seconds of `f`, the device's queued work included.
fn timed<F: FnMut() -> Result<()>>(s: &Setup, mut f: F) -> Result<f64> {
    s.sync()?;
    let t = Instant::now();
    f()?;
    s.sync()?;
    Ok(t.elapsed().as_secs_f64())
}

/// GFLOP/s of one n³ GEMM through candle's matmul, the kernel every marlhf
/// matmul runs on (the `gemm` crate on the CPU, cuBLAS on a GPU): the
/// device's attainable peak in the compute dtype.
fn gemm_gflops(s: &Setup, reps: usize) -> Result<f64> {
    let n = gemm_n(&s.dev);
    let a = Tensor::randn(0f32, 1.0, (n, n), &s.dev)?.to_dtype(s.dtype)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &s.dev)?.to_dtype(s.dtype)?;
    let secs = best_of(reps, || {
        timed(s, || {
            a.matmul(&b)?;
            Ok(())
        })
    })?;
    Ok(2.0 * (n as f64).powi(3) / secs / 1e9)
}

fn train_batch(rows: usize, len: usize, vocab: usize) -> Scored {
    let seqs: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            (0..len)
                .map(|i| ((r * 131 + i * 17) % (vocab - 192) + 3) as u32)
                .collect()
        })
        .collect();
    Scored {
        seqs,
        starts: vec![1; rows],
    }
}

/// Seconds per training step: mean token NLL, backward, clipped AdamW, of
/// what the model trains: every weight, or with an adapter set its factors
/// alone (the frozen base's products through the same fused GEMMs, without
/// their weight gradients).
fn train_seconds(s: &Setup, m: &Model, rows: usize, len: usize, reps: usize) -> Result<f64> {
    let cfg = &m.config;
    let batch = train_batch(rows, len, cfg.vocab_size);
    let vars = m.trainable();
    let mut opt = AdamW::new(AdamWConfig::default());
    best_of(reps, || {
        timed(s, || {
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

fn sample_tokens_per_s(s: &Setup, m: &Model, batch: usize, reps: usize) -> Result<f64> {
    let prompts: Vec<Vec<u32>> = (0..batch).map(|r| vec![1, 5 + r as u32, 9]).collect();
    let cfg = sampling(7);
    let secs = best_of(reps, || {
        timed(s, || {
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
fn rollout_tokens_per_s(s: &Setup, reps: usize) -> Result<f64> {
    let cfg = config();
    let actor = s.model(&cfg, 1, false, false)?;
    let reference = s.model(&cfg, 2, false, false)?;
    let critic = s.model(&cfg, 3, false, true)?;
    let rm = s.model(&cfg, 4, false, true)?;
    // Prompts of 24 to 62 tokens (the same as the PyTorch reference).
    let prompts: Vec<Vec<u32>> = (0..ROLLOUT_ROWS)
        .map(|r| {
            (0..24 + (r * 5) % 39)
                .map(|i| ((r * 37 + i * 11) % 8000 + 3) as u32)
                .collect()
        })
        .collect();
    let sc = sampling(7);
    let secs = best_of(reps, || {
        timed(s, || {
            let out = generate(&actor.llama, &prompts, &sc)?;
            let scored = Scored {
                seqs: prompts
                    .iter()
                    .zip(&out.tokens)
                    .map(|(p, r)| p.iter().chain(r).copied().collect())
                    .collect(),
                starts: prompts.iter().map(Vec::len).collect(),
            };
            for m in [&actor, &reference] {
                m.token_logprobs_at(&scored, sc.temperature)?
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
    name: String,
    value: f64,
    unit: &'static str,
    /// The share of the GEMM rate the work runs at, where it is matmuls.
    of_peak: Option<f64>,
    /// The most GPU memory the measurement's tensors held, GiB.
    memory: Option<f64>,
    /// The same measurement in portable mode (`--portable`).
    portable: Option<f64>,
}

/// The CPU's model name with its family/model numbers and the vector
/// extensions the kernels can use (a VM may report only "AMD EPYC"). The
/// extensions are what this process detects at run time (what the kernels
/// dispatch on; under an emulator, the emulated CPU's), the name is the
/// kernel's.
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| -> Option<String> {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let simd = simd();
    match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!("{name} (family {f}, model {m}, {simd})"),
        _ => format!("{name} ({simd})"),
    }
}

#[cfg(target_arch = "x86_64")]
fn simd() -> &'static str {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("fma") {
        "AVX-512"
    } else if has!("avx2") && has!("fma") {
        "AVX2/FMA"
    } else {
        "no AVX2/FMA"
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn simd() -> &'static str {
    std::env::consts::ARCH
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Runs one measurement with the device's peak memory counted from its
/// start.
fn measure(
    s: &Setup,
    rows: &mut Vec<Row>,
    name: String,
    unit: &'static str,
    f: impl Fn() -> Result<(f64, Option<f64>)>,
) -> Result<()> {
    device::reset_peak_memory(&s.dev);
    // With `--portable`, this machine's blocking first; without it, the
    // mode the process was started in (MARLHF_PORTABLE) is left alone.
    if s.portable {
        blocking::set_portable(false);
    }
    let (value, of_peak) = f()?;
    let memory = device::peak_memory_bytes(&s.dev).map(|b| b as f64 / (1u64 << 30) as f64);
    eprintln!("  {name}: {value:.1} {unit}");
    // Portable mode right after, so that both see the same machine state.
    let portable = if s.portable {
        blocking::set_portable(true);
        let pinned = f();
        blocking::set_portable(false);
        let p = pinned?.0;
        eprintln!("  {name}, portable: {p:.1} {unit}");
        Some(p)
    } else {
        None
    };
    rows.push(Row {
        name,
        value,
        unit,
        of_peak,
        memory,
        portable,
    });
    Ok(())
}

fn main() {
    marlhf_cli::stage_main("bench", || {
        let cli = Cli::parse();
        let dev = device::parse(&cli.device)?;
        let dtype = device::dtype(&cli.dtype, &dev)?;
        if cli.portable && !dev.is_cpu() {
            anyhow::bail!("--portable times the CPU's GEMM blocking; it needs --device cpu");
        }
        let s = Setup {
            dev,
            dtype,
            portable: cli.portable,
        };
        if let Some(dir) = &cli.parity {
            return parity::run(dir, &s.dev, &cli.json);
        }
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
        if cli.fingerprint {
            println!(
                "# {} · GEMM blocking: {}",
                cpu_model(),
                blocking::describe()
            );
            for (name, hash) in fingerprint::fingerprint()? {
                println!("{name:<32} {hash}");
            }
            return Ok(());
        }
        let wanted = |name: &str| cli.only.as_deref().is_none_or(|o| name.contains(o));
        let threads = rayon::current_num_threads();
        let where_ = if s.dev.is_cpu() {
            format!("{} · {threads} threads", cpu_model())
        } else {
            format!("{} · host {}", cli.device, cpu_model())
        };
        eprintln!(
            "{where_} · {} · 1-minute load average {} at start · GEMM blocking: {}",
            dtype_name(dtype),
            load_average(),
            blocking::describe()
        );

        let mut rows = Vec::new();
        let gemm = gemm_name(&s.dev, dtype);
        measure(&s, &mut rows, gemm.clone(), "GFLOP/s", || {
            Ok((gemm_gflops(&s, cli.reps)?, Some(1.0)))
        })?;
        let peak = rows[0].value;
        let tiny = config();
        if wanted(TRAIN) {
            measure(&s, &mut rows, TRAIN.into(), "tokens/s", || {
                let m = s.model(&tiny, 1234, true, false)?;
                let secs = train_seconds(&s, &m, TRAIN_ROWS, TRAIN_LEN, cli.reps)?;
                let gflop = flops::train_step(&tiny, TRAIN_ROWS, TRAIN_LEN, 1) / 1e9;
                Ok((
                    (TRAIN_ROWS * TRAIN_LEN) as f64 / secs,
                    Some(gflop / secs / peak),
                ))
            })?;
        }
        if wanted(TRAIN_LORA) {
            measure(&s, &mut rows, TRAIN_LORA.into(), "tokens/s", || {
                // A rank-16 adapter on all seven projections.
                let mut m = s.model(&tiny, 1234, true, false)?;
                let settings = marlhf_model::lora::LoraSettings {
                    rank: 16,
                    alpha: 16.0,
                    targets: marlhf_model::lora::Target::ALL.to_vec(),
                    dropout: 0.0,
                    rslora: false,
                };
                let adapter =
                    marlhf_model::lora::Adapter::new(&settings, &tiny, "base".into(), 1, &s.dev)?;
                m.set_adapter(Some(adapter))?;
                let secs = train_seconds(&s, &m, TRAIN_ROWS, TRAIN_LEN, cli.reps)?;
                Ok(((TRAIN_ROWS * TRAIN_LEN) as f64 / secs, None))
            })?;
        }
        let sample_rows: Vec<(String, usize)> = SAMPLE_BATCHES
            .iter()
            .map(|&b| (sample_name(b), b))
            .filter(|(n, _)| wanted(n))
            .collect();
        if !sample_rows.is_empty() {
            let m = s.model(&tiny, 1234, false, false)?;
            for (name, batch) in sample_rows {
                measure(&s, &mut rows, name, "tokens/s", || {
                    Ok((sample_tokens_per_s(&s, &m, batch, cli.reps)?, None))
                })?;
            }
        }
        if wanted(ROLLOUT) {
            measure(&s, &mut rows, ROLLOUT.into(), "tokens/s", || {
                Ok((rollout_tokens_per_s(&s, cli.reps)?, None))
            })?;
        }
        let gemma = gemma_config(cli.gemma_layers, cli.gemma_vocab, cli.gemma_hidden)?;
        let gemma_weights = if cli.gemma {
            eprintln!(
                "  gemma-2b: {} random weights on the CPU…",
                marlhf_model::params::count(&gemma)?
            );
            Some(Params::init(&gemma, 1234, &Device::Cpu)?)
        } else {
            None
        };
        if let (Some(w), true) = (&gemma_weights, wanted(GEMMA_TRAIN)) {
            measure(&s, &mut rows, GEMMA_TRAIN.into(), "tokens/s", || {
                let m = s.model_from(&gemma, w, true)?;
                let secs = train_seconds(&s, &m, GEMMA_TRAIN_ROWS, GEMMA_TRAIN_LEN, cli.reps)?;
                let gflop = flops::train_step(&gemma, GEMMA_TRAIN_ROWS, GEMMA_TRAIN_LEN, 1) / 1e9;
                Ok((
                    (GEMMA_TRAIN_ROWS * GEMMA_TRAIN_LEN) as f64 / secs,
                    Some(gflop / secs / peak),
                ))
            })?;
        }
        let gemma_rows: Vec<(String, usize)> = SAMPLE_BATCHES
            .iter()
            .map(|&b| (gemma_sample_name(b), b))
            .filter(|(n, _)| cli.gemma && wanted(n))
            .collect();
        if let (Some(w), false) = (&gemma_weights, gemma_rows.is_empty()) {
            let m = s.model_from(&gemma, w, false)?;
            for (name, batch) in gemma_rows {
                measure(&s, &mut rows, name, "tokens/s", || {
                    Ok((sample_tokens_per_s(&s, &m, batch, cli.reps)?, None))
                })?;
            }
        }

        print_table(&rows, reference.as_ref(), &gemm, &tiny, &gemma);

        let mut figures = serde_json::Map::new();
        let mut memory = serde_json::Map::new();
        let mut portable = serde_json::Map::new();
        for r in &rows {
            figures.insert(r.name.clone(), json!(r.value));
            if let Some(m) = r.memory {
                memory.insert(r.name.clone(), json!(m));
            }
            if let Some(p) = r.portable {
                portable.insert(r.name.clone(), json!(p));
            }
        }
        let out = json!({
            "figures": figures,
            "order": rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "memory_gib": memory,
            "device": cli.device,
            "dtype": dtype_name(dtype),
            "portable_figures": portable,
            "gemm_depth_block": blocking::machine_depth(),
            "cpu": cpu_model(),
            "threads": threads,
            "train_gflop_per_step": flops::train_step(&tiny, TRAIN_ROWS, TRAIN_LEN, 1) / 1e9,
            "gemma_layers": cli.gemma_layers,
            "gemma_vocab": cli.gemma_vocab,
            "gemma_hidden": cli.gemma_hidden,
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

fn print_table(
    rows: &[Row],
    reference: Option<&Value>,
    gemm: &str,
    tiny: &ModelConfig,
    gemma: &ModelConfig,
) {
    let theirs = |name: &str| -> Option<f64> { reference?.get("figures")?.get(name)?.as_f64() };
    let their_memory =
        |name: &str| -> Option<f64> { reference?.get("memory_gib")?.get(name)?.as_f64() };
    let pct = |f: Option<f64>| f.map(|f| format!("{:.0} %", 100.0 * f)).unwrap_or_default();
    let gib = |m: Option<f64>| m.map(|m| format!("{m:.2}")).unwrap_or_default();
    let with_memory = rows.iter().any(|r| r.memory.is_some());
    let with_portable = rows.iter().any(|r| r.portable.is_some());
    match reference {
        None => {
            print!(
                "{:<42} {:>10} {:<9} {:>9}",
                "benchmark", "marlhf", "unit", "of peak"
            );
            if with_portable {
                print!(" {:>10} {:>8}", "portable", "cost");
            }
            println!("{}", if with_memory { "  GPU GiB" } else { "" });
            for r in rows {
                print!(
                    "{:<42} {:>10.1} {:<9} {:>9}",
                    r.name,
                    r.value,
                    r.unit,
                    pct(r.of_peak)
                );
                if with_portable {
                    match r.portable {
                        Some(p) => print!(" {p:>10.1} {:>7.1} %", 100.0 * (1.0 - p / r.value)),
                        None => print!(" {:>10} {:>8}", "–", "–"),
                    }
                }
                if with_memory {
                    print!(" {:>8}", gib(r.memory));
                }
                println!();
            }
        }
        Some(reference) => {
            let torch_peak = theirs(gemm);
            print!(
                "{:<42} {:>10} {:>9} {:>10} {:>9} {:>7} {:<9}",
                "benchmark", "marlhf", "of peak", "PyTorch", "of peak", "ratio", "unit"
            );
            println!(
                "{}",
                if with_memory {
                    "  GPU GiB marlhf / PyTorch"
                } else {
                    ""
                }
            );
            for r in rows {
                let t = theirs(&r.name);
                // PyTorch's share of its own GEMM rate.
                let step = if r.name == TRAIN {
                    Some(
                        flops::train_step(tiny, TRAIN_ROWS, TRAIN_LEN, 1)
                            / (TRAIN_ROWS * TRAIN_LEN) as f64,
                    )
                } else if r.name == GEMMA_TRAIN {
                    Some(
                        flops::train_step(gemma, GEMMA_TRAIN_ROWS, GEMMA_TRAIN_LEN, 1)
                            / (GEMMA_TRAIN_ROWS * GEMMA_TRAIN_LEN) as f64,
                    )
                } else {
                    None
                };
                let t_peak = match (t, torch_peak) {
                    (Some(_), _) if r.name == gemm => Some(1.0),
                    (Some(t), Some(p)) => step.map(|f| f * t / 1e9 / p),
                    _ => None,
                };
                print!(
                    "{:<42} {:>10.1} {:>9} {:>10} {:>9} {:>7} {:<9}",
                    r.name,
                    r.value,
                    pct(r.of_peak),
                    t.map(|t| format!("{t:.1}")).unwrap_or_else(|| "–".into()),
                    pct(t_peak),
                    t.map(|t| format!("{:.2}x", r.value / t))
                        .unwrap_or_else(|| "–".into()),
                    r.unit
                );
                if with_memory {
                    print!("  {:>6} / {:<6}", gib(r.memory), gib(their_memory(&r.name)));
                }
                println!();
            }
            let s = |k: &str| reference.get(k).and_then(Value::as_str).unwrap_or("?");
            println!(
                "PyTorch {} · transformers {} · {} threads · {} (peak: each side's own {gemm})",
                s("torch"),
                s("transformers"),
                reference
                    .get("threads")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                s("blas")
            );
        }
    }
}
