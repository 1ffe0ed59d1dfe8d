//! Small real checkpoints and files for the eval stage's tests: the
//! pretrained stories260K (llama2.c) imported into the Hugging Face layout
//! as a policy, the same model with a fresh value head as a reward model,
//! a random tiny policy over the same vocabulary, and evaluation prompts.

use std::path::{Path, PathBuf};

use crate::{stories260k, TempDir};
use anyhow::{Context, Result};
use candle_core::Device;
use marlhf_data::MetricsRow;
use marlhf_model::checkpoint::save_into;
use marlhf_model::{llama2c, ModelConfig, Params};

/// Imports stories260K into `dir`; with `value_head`, adds a freshly
/// initialised (seeded) value head, which makes a valid reward model.
pub fn write_stories(dir: &Path, value_head: Option<u64>) -> Result<()> {
    let src = stories260k();
    let (cfg, params) = llama2c::import_model(&src.join("stories260K.bin"), &Device::Cpu)?;
    if let Some(seed) = value_head {
        params.add_value_head(&cfg, seed)?;
    }
    write(dir, &cfg, &params)
}

/// A random 2-layer Llama over stories260K's vocabulary: a policy that
/// answers differently from stories260K.
pub fn write_random(dir: &Path, seed: u64) -> Result<()> {
    let (stories, _) = llama2c::import_model(&stories260k().join("stories260K.bin"), &Device::Cpu)?;
    let mut cfg = ModelConfig::tiny_llama(stories.vocab_size, 32, 2, 4, 64);
    cfg.max_position_embeddings = stories.max_position_embeddings;
    cfg.bos_token_id = stories.bos_token_id;
    cfg.eos_token_id = stories.eos_token_id.clone();
    cfg.pad_token_id = stories.pad_token_id;
    let params = Params::init(&cfg, seed, &Device::Cpu)?;
    write(dir, &cfg, &params)
}

fn write(dir: &Path, cfg: &ModelConfig, params: &Params) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let json = llama2c::import_tokenizer(&stories260k().join("tok512.bin"), cfg.vocab_size)?;
    let tok = dir.join(".tokenizer-src.json");
    std::fs::write(&tok, json)?;
    save_into(dir, cfg, params, &tok)?;
    std::fs::remove_file(&tok)?;
    Ok(())
}

/// `n` prompts with ids 500, 501, …
pub fn write_prompt_file(path: &Path, n: usize) -> Result<()> {
    crate::ppo::write_prompt_file_from(path, n, 500)
}

/// A run directory with what the eval stage reads: `sft/` (stories260K),
/// `ppo/` (a random policy), `rm/` (stories260K + value head), prompts and
/// metrics files.
pub struct EvalRun {
    pub tmp: TempDir,
}

impl EvalRun {
    pub fn new(tag: &str, prompts: usize) -> Result<Self> {
        let run = EvalRun {
            tmp: TempDir::new(tag),
        };
        write_stories(&run.sft(), None)?;
        write_random(&run.ppo(), 7)?;
        write_stories(&run.rm(), Some(3))?;
        write_prompt_file(&run.prompts(), prompts)?;
        marlhf_data::write_metrics(
            &run.rm_metrics(),
            &[
                MetricsRow {
                    step: 10,
                    iteration: 0,
                    values: vec![("loss".into(), 0.7), ("accuracy".into(), 0.5)],
                },
                MetricsRow {
                    step: 20,
                    iteration: 0,
                    values: vec![
                        ("loss".into(), 0.6),
                        ("val_loss".into(), 0.65),
                        ("val_accuracy".into(), 0.625),
                    ],
                },
            ],
        )?;
        for (name, base) in [("ppo-n1", 0.0), ("ppo-n5", 0.5)] {
            let rows: Vec<MetricsRow> = (0..3)
                .map(|k| MetricsRow {
                    step: k as u64 + 1,
                    iteration: k,
                    values: vec![
                        ("score_mean".into(), base + 0.25 * k as f64),
                        ("kl_k1_seq_sum".into(), 0.01),
                    ],
                })
                .collect();
            marlhf_data::write_metrics(&run.root().join(name).join("metrics.parquet"), &rows)?;
        }
        Ok(run)
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn sft(&self) -> PathBuf {
        self.root().join("sft")
    }

    pub fn ppo(&self) -> PathBuf {
        self.root().join("ppo")
    }

    pub fn rm(&self) -> PathBuf {
        self.root().join("rm")
    }

    pub fn prompts(&self) -> PathBuf {
        self.root().join("data/eval_prompts.parquet")
    }

    pub fn rm_metrics(&self) -> PathBuf {
        self.root().join("rm/metrics.parquet")
    }

    pub fn ppo_metrics(&self, name: &str) -> PathBuf {
        self.root().join(name).join("metrics.parquet")
    }
}
