//! Tiny checkpoints and files for the PPO stages' process tests: a random
//! 2-layer Llama over the real stories260K SentencePiece vocabulary (512
//! tokens), an SFT model, a reward model with a value head, prompts, and
//! synthetic rollouts with known numbers.

use std::path::{Path, PathBuf};

use crate::{stories260k, TempDir};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use marlhf_data::{write_prompts, PromptRow, RolloutRow};
use marlhf_model::checkpoint::save_into;
use marlhf_model::{llama2c, ModelConfig, Params};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const VOCAB: usize = 512;
pub const EOS: u32 = 2;

pub fn config() -> ModelConfig {
    ModelConfig::tiny_llama(VOCAB, 32, 2, 4, 64)
}

/// Writes `tokenizer.json` converted from stories260K's `tok512.bin`.
pub fn write_tokenizer(path: &Path) -> Result<()> {
    let json = llama2c::import_tokenizer(&stories260k().join("tok512.bin"), VOCAB)?;
    std::fs::write(path, json).with_context(|| format!("{}: cannot write", path.display()))
}

/// A random tiny checkpoint in `dir`. `eos_bias` tilts the LM head towards
/// EOS along a fixed direction of the hidden state, so that some sampled
/// responses end early and others run to the token limit.
pub fn write_checkpoint(
    dir: &Path,
    tokenizer_json: &Path,
    seed: u64,
    value_head: bool,
    eos_bias: f32,
) -> Result<()> {
    let cfg = config();
    let params = Params::init(&cfg, seed, &Device::Cpu)?;
    if value_head {
        params.add_value_head(&cfg, seed)?;
    }
    if eos_bias != 0.0 {
        let head = params.get(marlhf_model::names::LM_HEAD)?;
        let mut rows: Vec<Vec<f32>> = head.to_vec2()?;
        rows[EOS as usize] = vec![eos_bias; cfg.hidden_size];
        params.insert(
            marlhf_model::names::LM_HEAD,
            Tensor::new(rows, &Device::Cpu)?,
        )?;
    }
    std::fs::create_dir_all(dir)?;
    save_into(dir, &cfg, &params, tokenizer_json)
}

/// Overwrites one weight of a checkpoint with NaN.
pub fn poison(dir: &Path, name: &str) -> Result<()> {
    let weights = dir.join(marlhf_model::checkpoint::WEIGHTS);
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
    let t = tensors
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("no tensor {name}"))?;
    let mut flat: Vec<f32> = t.flatten_all()?.to_vec1()?;
    flat[0] = f32::NAN;
    let poisoned = Tensor::from_vec(flat, t.dims(), &Device::Cpu)?;
    tensors.insert(name.to_string(), poisoned);
    // Written by hand: marlhf itself never saves a non-finite value.
    candle_core::safetensors::save(&tensors, &weights)?;
    Ok(())
}

const PROMPTS: [&str; 6] = [
    "Once upon a time, there was a little dog.",
    "Tom and Lily went to the park.",
    "The sun was hot and the birds were singing.",
    "Sue had a red ball. She liked to",
    "One day, a big cat saw a fish in the water.",
    "Mom said: \"Let us bake a cake!\"",
];

pub fn write_prompt_file(path: &Path, n: usize) -> Result<()> {
    write_prompt_file_from(path, n, 1000)
}

/// `n` short story prompts with ids `first_id`, `first_id + 1`, …
pub fn write_prompt_file_from(path: &Path, n: usize, first_id: u64) -> Result<()> {
    let rows: Vec<PromptRow> = (0..n)
        .map(|i| PromptRow {
            id: first_id + i as u64,
            prompt: PROMPTS[i % PROMPTS.len()].to_string(),
            reference: None,
            subreddit: None,
            tests: None,
        })
        .collect();
    write_prompts(path, &rows)?;
    Ok(())
}

/// A run directory as the PPO stages find it: `data/prompts.parquet`,
/// `sft/` (the actor and reference) and `rm/` (reward model and critic).
pub struct Run {
    pub tmp: TempDir,
}

impl Run {
    pub fn new(tag: &str, prompts: usize) -> Result<Self> {
        let tmp = TempDir::new(tag);
        let run = Run { tmp };
        let tok = run.root().join("tokenizer.json");
        write_tokenizer(&tok)?;
        write_checkpoint(&run.sft(), &tok, 11, false, 0.3)?;
        write_checkpoint(&run.rm(), &tok, 12, true, 0.0)?;
        write_prompt_file(&run.prompts(), prompts)?;
        Ok(run)
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn sft(&self) -> PathBuf {
        self.root().join("sft")
    }

    pub fn rm(&self) -> PathBuf {
        self.root().join("rm")
    }

    pub fn prompts(&self) -> PathBuf {
        self.root().join("data/prompts.parquet")
    }
}

/// A rollout with random but plausible numbers (log-probs in [−6, 0),
/// values and score in [−2, 2)): what the update reads, without a model.
pub fn synthetic_rollout(
    id: u64,
    iteration: u32,
    prompt_len: usize,
    len: usize,
    seed: u64,
) -> RolloutRow {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9));
    let tok = |rng: &mut ChaCha8Rng| rng.random_range(3..VOCAB as u32);
    let mut prompt_tokens = vec![1];
    prompt_tokens.extend((1..prompt_len).map(|_| tok(&mut rng)));
    let finished = id.is_multiple_of(2) && len > 0;
    let mut response_tokens: Vec<u32> = (0..len).map(|_| tok(&mut rng)).collect();
    if finished {
        response_tokens[len - 1] = EOS;
    }
    let mut f =
        |lo: f32, hi: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(lo..hi)).collect() };
    let logprobs = f(-6.0, 0.0);
    let ref_logprobs = f(-6.0, 0.0);
    let values = f(-2.0, 2.0);
    RolloutRow {
        id,
        prompt_id: 1000 + id,
        iteration,
        prompt_tokens,
        response_tokens,
        response: String::new(),
        logprobs,
        ref_logprobs,
        values,
        score: rng.random_range(-4.0..4.0),
        finished,
        temperature: 1.0,
        logprob_temperature: 1.0,
        gold: None,
    }
}

/// How a stage process ended.
pub struct Exit {
    pub success: bool,
    pub code: Option<i32>,
    pub stderr: String,
}

impl Exit {
    /// Checks that the stage succeeded, showing its stderr if not.
    pub fn ok(&self) {
        assert!(self.success, "{}", self.stderr);
    }

    /// The one `error: …` line a failed stage prints, checked to be its
    /// last line and its only error line.
    pub fn error_line(&self) -> &str {
        assert!(!self.success, "the stage succeeded:\n{}", self.stderr);
        assert_eq!(self.code, Some(1), "{}", self.stderr);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", self.stderr);
        assert_eq!(self.stderr.lines().last(), Some(errors[0]));
        errors[0]
    }
}

/// Runs a stage binary with `args`, capturing stderr.
pub fn run_stage<S: AsRef<std::ffi::OsStr>>(exe: &str, args: &[S]) -> Exit {
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe}: {e}"));
    Exit {
        success: out.status.success(),
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
