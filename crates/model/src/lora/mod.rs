//! LoRA adapters in PEFT's format (Hu et al. 2021; rsLoRA, Kalajdzievski
//! 2023): a frozen base model plus, on chosen projections, a low-rank
//! update y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with A [r, in], B [out, r] and s = alpha/r
//! (alpha/√r with rsLoRA).
//!
//! An adapter directory is what `peft`'s `save_pretrained` writes and
//! `PeftModel.from_pretrained` reads: `adapter_config.json` and
//! `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`),
//! plus the tokenizer files. marlhf adds `value_head.safetensors` for the
//! trained value head of a reward model or critic, which PEFT has no place
//! for (and ignores). `base_model_name_or_path` names the base checkpoint:
//! marlhf writes it relative to the adapter's directory, so a run directory
//! can move as a whole, and reads it relative to the adapter's directory,
//! else to the working directory (PEFT's own reading), or absolute.
//!
//! The base model's weights stay as loaded (no gradient, no optimiser
//! state, the compute dtype); A, B and a value head are the trained
//! parameters, in f32.

pub mod config;
pub mod frozen;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_distr::{Distribution, Uniform};

pub use config::AdapterConfig;

use crate::checkpoint::{WEIGHTS, WEIGHTS_INDEX};
use crate::config::ModelConfig;
use crate::names::{self, in_layer, V_HEAD};
use crate::params::Params;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// marlhf's: the value head (`v_head.weight`) of a reward model's or
/// critic's adapter.
pub const VALUE_HEAD: &str = "value_head.safetensors";
/// What PEFT puts before the model's own tensor names.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// A projection LoRA can adapt, named as PEFT's `target_modules` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    pub fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    pub fn from_peft_name(s: &str) -> Option<Self> {
        Target::ALL.into_iter().find(|t| t.peft_name() == s)
    }

    /// The module inside a decoder layer.
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => names::Q_PROJ,
            Target::K => names::K_PROJ,
            Target::V => names::V_PROJ,
            Target::O => names::O_PROJ,
            Target::Gate => names::GATE_PROJ,
            Target::Up => names::UP_PROJ,
            Target::Down => names::DOWN_PROJ,
        }
    }

    /// (out, in) of the projection in a model of `cfg`.
    pub fn shape(self, cfg: &ModelConfig) -> (usize, usize) {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (q, kv) = (
            cfg.num_attention_heads * cfg.head_dim(),
            cfg.kv_heads() * cfg.head_dim(),
        );
        match self {
            Target::Q => (q, h),
            Target::K | Target::V => (kv, h),
            Target::O => (h, q),
            Target::Gate | Target::Up => (i, h),
            Target::Down => (h, i),
        }
    }

    /// Parses `--lora-targets`: module names separated by commas, or
    /// `all-linear` (the seven projections).
    pub fn parse_list(s: &str) -> Result<Vec<Target>> {
        if s.trim() == "all-linear" {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let t = Target::from_peft_name(name).ok_or_else(|| {
                anyhow!(
                    "--lora-targets: {name:?} is not a module LoRA can adapt (expected some of {}, or all-linear)",
                    Target::ALL.map(Target::peft_name).join(",")
                )
            })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            bail!("--lora-targets names no module");
        }
        out.sort();
        Ok(out)
    }
}

/// The name of layer `layer`'s A (`which` = "lora_A") or B ("lora_B") for
/// `target`: PEFT's name without its prefix.
pub fn factor_name(layer: usize, target: Target, which: &str) -> String {
    format!(
        "{}.{which}.weight",
        in_layer(&names::layer(layer), target.module())
    )
}

/// How many parameters an adapter of rank `r` on `targets` has in a model
/// of `cfg`: r·(in + out) per target and layer (a value head adds
/// `hidden`).
pub fn count(cfg: &ModelConfig, r: usize, targets: &[Target]) -> u64 {
    let per_layer: usize = targets
        .iter()
        .map(|t| {
            let (out, inp) = t.shape(cfg);
            r * (inp + out)
        })
        .sum();
    (per_layer * cfg.num_hidden_layers) as u64
}

/// LoRA as a training run asks for it (`--lora-rank` and the flags beside
/// it).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSettings {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<Target>,
    pub dropout: f64,
    pub rslora: bool,
}

impl LoraSettings {
    pub fn check(&self) -> Result<()> {
        if self.rank == 0 {
            bail!("--lora-rank must be positive");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!(
                "--lora-alpha must be a finite number > 0, got {}",
                self.alpha
            );
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            bail!("--lora-dropout must be in [0, 1), got {}", self.dropout);
        }
        if self.targets.is_empty() {
            bail!("--lora-targets names no module");
        }
        Ok(())
    }

    pub fn scaling(&self) -> f64 {
        self.config(String::new()).scaling()
    }

    /// The adapter config these settings make, for a base at `base_model`.
    pub fn config(&self, base_model: String) -> AdapterConfig {
        AdapterConfig {
            base_model,
            r: self.rank,
            alpha: self.alpha,
            rslora: self.rslora,
            dropout: self.dropout,
            targets: self.targets.clone(),
        }
    }

    /// One line for summaries and a run's recorded settings.
    pub fn describe(&self) -> String {
        format!(
            "r {} alpha {} ({}scaling {}) on {}, dropout {}",
            self.rank,
            self.alpha,
            if self.rslora { "rsLoRA " } else { "" },
            self.scaling(),
            self.targets
                .iter()
                .map(|t| t.peft_name())
                .collect::<Vec<_>>()
                .join(","),
            self.dropout
        )
    }

    /// Whether an existing adapter is the one these settings describe (the
    /// dropout, a training-time setting, may differ).
    pub fn same_adapter(&self, c: &AdapterConfig) -> bool {
        self.rank == c.r
            && self.alpha == c.alpha
            && self.rslora == c.rslora
            && self.targets == c.targets
    }
}

/// A LoRA adapter in memory.
pub struct Adapter {
    pub config: AdapterConfig,
    /// Every target's A and B, under marlhf's names ([`factor_name`]), and
    /// the value head (`v_head.weight`) when the adapter carries one; all
    /// trainable.
    pub params: Params,
    /// The base checkpoint directory it adapts.
    pub base: PathBuf,
}

/// Whether `dir` holds a PEFT adapter (and no full weights).
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
        && !dir.join(WEIGHTS).is_file()
        && !dir.join(WEIGHTS_INDEX).is_file()
}

/// The base checkpoint of the adapter in `dir`: `base_model_name_or_path`
/// relative to the adapter's directory, else to the working directory, or
/// absolute. It must be a directory with full weights (an adapter of an
/// adapter is not a PEFT model).
pub fn resolve_base(dir: &Path, cfg: &AdapterConfig) -> Result<PathBuf> {
    let named = Path::new(&cfg.base_model);
    let candidates = if named.is_absolute() {
        vec![named.to_path_buf()]
    } else {
        vec![dir.join(named), named.to_path_buf()]
    };
    let Some(base) = candidates.iter().find(|p| p.is_dir()) else {
        bail!(
            "{}: base_model_name_or_path {:?} is not a directory (looked for {}); the base model must be a local checkpoint",
            dir.join(ADAPTER_CONFIG).display(),
            cfg.base_model,
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
    };
    if is_adapter(base) {
        bail!(
            "{}: its base {} is itself an adapter; merge that one first (marlhf-import merge)",
            dir.display(),
            base.display()
        );
    }
    Ok(base.clone())
}

/// `to` as a path relative to the directory `from` (both resolved to
/// absolute paths first; `from` need not exist yet, its parent must).
pub fn relative_path(from: &Path, to: &Path) -> Result<PathBuf> {
    let abs = |p: &Path| -> Result<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Ok(c);
        }
        let parent = p
            .parent()
            .filter(|q| !q.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = p
            .file_name()
            .ok_or_else(|| anyhow!("{}: not a directory name", p.display()))?;
        Ok(parent
            .canonicalize()
            .with_context(|| format!("{}: not found", parent.display()))?
            .join(name))
    };
    let (from, to) = (abs(from)?, abs(to)?);
    let (f, t): (Vec<Component>, Vec<Component>) =
        (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    Ok(rel)
}

impl Adapter {
    /// A fresh adapter, initialised as PEFT initialises one: A
    /// Kaiming-uniform (bound 1/√in, `kaiming_uniform_(a=√5)`), B zero, so
    /// the adapted model starts as the base model.
    pub fn new(
        settings: &LoraSettings,
        cfg: &ModelConfig,
        base: PathBuf,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        settings.check()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x10ba_ada9_7e25);
        let params = Params::empty();
        for layer in 0..cfg.num_hidden_layers {
            for &t in &settings.targets {
                let (out, inp) = t.shape(cfg);
                let bound = 1.0 / (inp as f32).sqrt();
                let u = Uniform::new(-bound, bound).map_err(|e| anyhow!("{e}"))?;
                let a: Vec<f32> = (0..settings.rank * inp)
                    .map(|_| u.sample(&mut rng))
                    .collect();
                params.insert(
                    &factor_name(layer, t, "lora_A"),
                    Tensor::from_vec(a, (settings.rank, inp), dev)?,
                )?;
                params.insert(
                    &factor_name(layer, t, "lora_B"),
                    Tensor::zeros((out, settings.rank), DType::F32, dev)?,
                )?;
            }
        }
        Ok(Adapter {
            config: settings.config(String::new()),
            params,
            base,
        })
    }

    /// The adapter in `dir` for a base model of `cfg`, its tensors in
    /// `dtype`. Every target of every layer must be there with the shapes
    /// the config and the rank give, and nothing else.
    pub fn load(dir: &Path, cfg: &ModelConfig, dev: &Device, dtype: DType) -> Result<Self> {
        let config = AdapterConfig::load(&dir.join(ADAPTER_CONFIG))?;
        let base = resolve_base(dir, &config)?;
        let path = dir.join(ADAPTER_WEIGHTS);
        if !path.is_file() {
            if dir.join("adapter_model.bin").is_file() {
                bail!(
                    "{}: only PyTorch adapter_model.bin; save the adapter with safe_serialization=True",
                    dir.display()
                );
            }
            bail!("{}: no {ADAPTER_WEIGHTS}", dir.display());
        }
        let raw = Params::empty();
        let names = raw.load_file(&path, dev, dtype)?;
        let params = Params::empty();
        let mut expected: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for layer in 0..cfg.num_hidden_layers {
            for &t in &config.targets {
                let (out, inp) = t.shape(cfg);
                expected.insert(factor_name(layer, t, "lora_A"), (config.r, inp));
                expected.insert(factor_name(layer, t, "lora_B"), (out, config.r));
            }
        }
        for name in &names {
            let Some(own) = name.strip_prefix(PEFT_PREFIX) else {
                bail!(
                    "{}: tensor {name:?} is not named as PEFT names adapter weights (base_model.model.…)",
                    path.display()
                );
            };
            let Some(&shape) = expected.get(own) else {
                bail!(
                    "{}: tensor {name:?} is not a LoRA factor of the target modules {} (DoRA's magnitudes, biases, adapted embeddings and modules_to_save are not implemented); refusing rather than ignoring it",
                    path.display(),
                    config
                        .targets
                        .iter()
                        .map(|t| t.peft_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let t = raw.get(name)?;
            if t.dims() != [shape.0, shape.1] {
                bail!(
                    "{}: tensor {name:?} has shape {:?}, the base model and r = {} give {:?}",
                    path.display(),
                    t.dims(),
                    config.r,
                    [shape.0, shape.1]
                );
            }
            params.insert(own, t)?;
        }
        if let Some(missing) = expected.keys().find(|n| !params.contains(n)) {
            bail!(
                "{}: no tensor {PEFT_PREFIX}{missing} (every layer of every target module must be adapted; layers_to_transform is not implemented)",
                path.display()
            );
        }
        let head = dir.join(VALUE_HEAD);
        if head.is_file() {
            let h = Params::empty();
            let names = h.load_file(&head, dev, dtype)?;
            if names != [V_HEAD] {
                bail!(
                    "{}: expected exactly one tensor, {V_HEAD:?}, found {names:?}",
                    head.display()
                );
            }
            let t = h.get(V_HEAD)?;
            if t.dims() != [1, cfg.hidden_size] {
                bail!(
                    "{}: {V_HEAD} has shape {:?}, the base model gives [1, {}]",
                    head.display(),
                    t.dims(),
                    cfg.hidden_size
                );
            }
            params.insert(V_HEAD, t)?;
        }
        Ok(Adapter {
            config,
            params,
            base,
        })
    }

    /// Writes the adapter into the (existing) directory `dir`: its config
    /// naming the base relative to `dir`, the factors under PEFT's names,
    /// the value head beside them when there is one. Refuses (and writes
    /// nothing of the weights) when a value is NaN or infinite.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut cfg = self.config.clone();
        cfg.base_model = relative_path(dir, &self.base)?.display().to_string();
        let factors = Params::empty();
        let head = Params::empty();
        for (name, var) in self.params.vars() {
            let t = var.as_tensor().to_dtype(DType::F32)?;
            if name == V_HEAD {
                head.insert(V_HEAD, t)?;
            } else {
                factors.insert(&format!("{PEFT_PREFIX}{name}"), t)?;
            }
        }
        factors.save(&dir.join(ADAPTER_WEIGHTS))?;
        if head.contains(V_HEAD) {
            head.save(&dir.join(VALUE_HEAD))?;
        }
        std::fs::write(dir.join(ADAPTER_CONFIG), cfg.to_json()?)
            .with_context(|| format!("{}: cannot write", dir.display()))?;
        Ok(())
    }

    pub fn scaling(&self) -> f64 {
        self.config.scaling()
    }

    /// Layer `layer`'s A and B for `target`, if the adapter adapts it.
    pub fn factors(&self, layer: usize, target: Target) -> Result<Option<(Tensor, Tensor)>> {
        if !self.config.targets.contains(&target) {
            return Ok(None);
        }
        Ok(Some((
            self.params.get(&factor_name(layer, target, "lora_A"))?,
            self.params.get(&factor_name(layer, target, "lora_B"))?,
        )))
    }

    pub fn value_head(&self) -> Option<Tensor> {
        self.params.get(V_HEAD).ok()
    }

    /// Gives the adapter a trainable value head (a copy of `head`).
    pub fn set_value_head(&self, head: &Tensor) -> Result<()> {
        self.params
            .insert(V_HEAD, head.to_dtype(DType::F32)?.copy()?)
    }

    /// The trained parameters: the factors and the value head.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.params.vars()
    }

    /// The base's weights with every adapted projection replaced by
    /// W + s·B·A (computed in f32, as `merge_and_unload` computes in the
    /// weights' dtype), and the adapter's value head, if any, in place of
    /// the base's: the full checkpoint transformers loads.
    pub fn merged(&self, cfg: &ModelConfig, base: &Params) -> Result<Params> {
        let out = Params::empty();
        for (name, var) in base.vars() {
            out.insert(&name, var.as_tensor().clone())?;
        }
        let s = self.scaling();
        for layer in 0..cfg.num_hidden_layers {
            for &t in &self.config.targets {
                let (a, b) = self.factors(layer, t)?.expect("a target of the adapter");
                let w_name = names::weight(&in_layer(&names::layer(layer), t.module()));
                let w = base.get(&w_name)?;
                let delta = (b.to_dtype(DType::F32)?.matmul(&a.to_dtype(DType::F32)?)? * s)?;
                let merged = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
                out.insert(&w_name, merged)?;
            }
        }
        if let Some(h) = self.value_head() {
            out.insert(V_HEAD, h.to_dtype(base.dtype()?)?)?;
        }
        Ok(out)
    }
}

/// A dropout mask for `n` inputs: each element 0 with probability `p`,
/// else 1/(1 − p) (PyTorch's `nn.Dropout`), drawn from `key`.
pub(crate) fn dropout_mask(
    key: u64,
    shape: &candle_core::Shape,
    p: f64,
    dtype: DType,
    dev: &Device,
) -> Result<Tensor> {
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(key);
    let keep = (1.0 / (1.0 - p)) as f32;
    let n = shape.elem_count();
    let mask: Vec<f32> = (0..n)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(mask, shape.clone(), dev)?.to_dtype(dtype)?)
}

/// splitmix64's finaliser: mixes a dropout key with a layer and module so
/// every adapted projection draws its own mask.
pub(crate) fn mix(key: u64, salt: u64) -> u64 {
    let mut z = key ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_relative_paths_resolve() {
        assert_eq!(
            Target::parse_list("v_proj, q_proj,q_proj").unwrap(),
            vec![Target::Q, Target::V]
        );
        assert_eq!(Target::parse_list("all-linear").unwrap(), Target::ALL);
        let e = Target::parse_list("q_proj,lm_head")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"lm_head\""), "{e}");
        let tmp = std::env::temp_dir().join(format!("marlhf-lora-rel-{}", std::process::id()));
        let (a, b) = (tmp.join("runs/x/ppo/iter-001"), tmp.join("runs/x/sft"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(relative_path(&a, &b).unwrap(), Path::new("../../sft"));
        // `from` need not exist yet (a directory about to be written).
        assert_eq!(
            relative_path(&tmp.join("runs/x/ppo/iter-002"), &b).unwrap(),
            Path::new("../../sft")
        );
        assert_eq!(relative_path(&b, &b).unwrap(), Path::new("."));
        std::fs::remove_dir_all(&tmp).ok();
    }

    #[test]
    fn a_fresh_adapter_is_the_base_and_has_count_parameters() {
        let mut cfg = ModelConfig::tiny_llama(40, 12, 2, 3, 20);
        cfg.num_key_value_heads = Some(1);
        let s = LoraSettings {
            rank: 3,
            alpha: 6.0,
            targets: vec![Target::K, Target::Down],
            dropout: 0.0,
            rslora: false,
        };
        let a = Adapter::new(&s, &cfg, "b".into(), 1, &Device::Cpu).unwrap();
        // k: 3·(12 + 4), down: 3·(20 + 12), per layer, 2 layers.
        assert_eq!(count(&cfg, 3, &s.targets), 2 * (3 * 16 + 3 * 32));
        assert_eq!(a.params.num_params() as u64, count(&cfg, 3, &s.targets));
        let (fa, fb) = a.factors(1, Target::Down).unwrap().unwrap();
        assert_eq!((fa.dims(), fb.dims()), (&[3, 20][..], &[12, 3][..]));
        // B = 0: the update is zero; A within ±1/√in.
        let b: Vec<f32> = fb.flatten_all().unwrap().to_vec1().unwrap();
        assert!(b.iter().all(|&x| x == 0.0));
        let av: Vec<f32> = fa.flatten_all().unwrap().to_vec1().unwrap();
        let bound = 1.0 / 20f32.sqrt();
        assert!(av.iter().all(|&x| x.abs() <= bound) && av.iter().any(|&x| x != 0.0));
        assert!(a.factors(0, Target::Q).unwrap().is_none());
        assert_eq!(a.scaling(), 2.0);
    }

    #[test]
    fn dropout_keeps_the_expectation() {
        let m = dropout_mask(7, &(100_000,).into(), 0.25, DType::F32, &Device::Cpu).unwrap();
        let v: Vec<f32> = m.to_vec1().unwrap();
        let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
        assert!((zeros - 0.25).abs() < 0.01, "{zeros}");
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
        assert!(v.iter().all(|&x| x == 0.0 || x == (1.0f64 / 0.75) as f32));
        let again = dropout_mask(7, &(100_000,).into(), 0.25, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(v, again.to_vec1::<f32>().unwrap());
    }
}
