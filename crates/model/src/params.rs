//! The parameter store: every trainable tensor as a `Var` in a candle
//! `VarMap`, under its Hugging Face name, with deterministic initialisation
//! and byte-stable safetensors I/O.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::ModelConfig;

pub use crate::names::V_HEAD;
use crate::names::{self, in_layer};

pub struct Params {
    pub varmap: VarMap,
}

#[derive(Clone, Copy)]
enum Init {
    Ones,
    Zeros,
    Normal(f64),
}

/// Names, shapes and initialisers of a model's parameters, in a fixed order.
fn specs(cfg: &ModelConfig) -> Result<Vec<(String, Vec<usize>, Init)>> {
    let arch = cfg.arch()?;
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    let std = 0.02;
    // Gemma stores RMSNorm weights as w − 1: zeros are the identity.
    let norm = if arch.norm_one_plus {
        Init::Zeros
    } else {
        Init::Ones
    };
    let mut s = vec![(names::EMBED.to_string(), vec![v, h], Init::Normal(std))];
    let linear = |s: &mut Vec<(String, Vec<usize>, Init)>, name: String, out, inp, bias: bool| {
        s.push((format!("{name}.weight"), vec![out, inp], Init::Normal(std)));
        if bias {
            s.push((format!("{name}.bias"), vec![out], Init::Zeros));
        }
    };
    for l in 0..cfg.num_hidden_layers {
        let p = names::layer(l);
        s.push((in_layer(&p, names::INPUT_NORM), vec![h], norm));
        for (name, out) in [
            (names::Q_PROJ, nh * hd),
            (names::K_PROJ, nkv * hd),
            (names::V_PROJ, nkv * hd),
        ] {
            linear(&mut s, in_layer(&p, name), out, h, arch.qkv_bias);
        }
        linear(&mut s, in_layer(&p, names::O_PROJ), h, nh * hd, arch.o_bias);
        if arch.qk_norm {
            s.push((in_layer(&p, names::Q_NORM), vec![hd], norm));
            s.push((in_layer(&p, names::K_NORM), vec![hd], norm));
        }
        s.push((in_layer(&p, names::POST_ATTENTION_NORM), vec![h], norm));
        if arch.sandwich_norms {
            s.push((in_layer(&p, names::PRE_FEEDFORWARD_NORM), vec![h], norm));
            s.push((in_layer(&p, names::POST_FEEDFORWARD_NORM), vec![h], norm));
        }
        linear(&mut s, in_layer(&p, names::GATE_PROJ), i, h, arch.mlp_bias);
        linear(&mut s, in_layer(&p, names::UP_PROJ), i, h, arch.mlp_bias);
        linear(&mut s, in_layer(&p, names::DOWN_PROJ), h, i, arch.mlp_bias);
    }
    s.push((names::FINAL_NORM.into(), vec![h], norm));
    if !arch.tied {
        s.push((names::LM_HEAD.into(), vec![v, h], Init::Normal(std)));
    }
    Ok(s)
}

/// How many parameters a config's model has (without a value head),
/// computed from the shapes alone.
pub fn count(cfg: &ModelConfig) -> Result<u64> {
    Ok(specs(cfg)?
        .iter()
        .map(|(_, shape, _)| shape.iter().product::<usize>() as u64)
        .sum())
}

fn make(
    shape: &[usize],
    init: Init,
    rng: &mut rand_chacha::ChaCha8Rng,
    dev: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = match init {
        Init::Ones => vec![1.0; n],
        Init::Zeros => vec![0.0; n],
        Init::Normal(std) => {
            let d = Normal::new(0.0, std as f32).map_err(|e| anyhow!("{e}"))?;
            (0..n).map(|_| d.sample(rng)).collect()
        }
    };
    Ok(Tensor::from_vec(data, shape, dev)?)
}

impl Params {
    pub fn empty() -> Self {
        Params {
            varmap: VarMap::new(),
        }
    }

    /// Fresh parameters for `cfg`, identical for identical seeds.
    pub fn init(cfg: &ModelConfig, seed: u64, dev: &Device) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let p = Params::empty();
        for (name, shape, init) in specs(cfg)? {
            p.insert(&name, make(&shape, init, &mut rng, dev)?)?;
        }
        Ok(p)
    }

    /// Adds a freshly initialised value head (hidden → 1).
    pub fn add_value_head(&self, cfg: &ModelConfig, seed: u64) -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f00d);
        let std = 1.0 / ((cfg.hidden_size + 1) as f64).sqrt();
        let dev = self.device()?;
        self.insert(
            V_HEAD,
            make(&[1, cfg.hidden_size], Init::Normal(std), &mut rng, &dev)?,
        )
    }

    pub fn insert(&self, name: &str, t: Tensor) -> Result<()> {
        let mut data = self.varmap.data().lock().map_err(|_| anyhow!("poisoned"))?;
        data.insert(name.to_string(), Var::from_tensor(&t)?);
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        let mut data = self.varmap.data().lock().map_err(|_| anyhow!("poisoned"))?;
        data.remove(name);
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        let data = self.varmap.data().lock().map_err(|_| anyhow!("poisoned"))?;
        data.get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| anyhow!("checkpoint has no parameter {name:?}"))
    }

    /// All variables sorted by name, so every iteration order is stable.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("parameter map poisoned");
        let sorted: BTreeMap<_, _> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        sorted.into_iter().collect()
    }

    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    pub fn device(&self) -> Result<Device> {
        self.vars()
            .first()
            .map(|(_, v)| v.device().clone())
            .ok_or_else(|| anyhow!("no parameters"))
    }

    /// Loads every tensor of a safetensors file as a parameter, converted
    /// to f32 (training precision). Integer tensors are refused rather than
    /// converted (an I32 weight read as floats trains at absurd losses), and
    /// so are NaN or infinite values.
    pub fn load(path: &Path, dev: &Device) -> Result<Self> {
        let p = Params::empty();
        p.load_file(path, dev, DType::F32)?;
        Ok(p)
    }

    /// Adds every tensor of a safetensors file, converted to `dtype`, and
    /// returns their names.
    pub fn load_file(&self, path: &Path, dev: &Device, dtype: DType) -> Result<Vec<String>> {
        let tensors = candle_core::safetensors::load(path, dev)
            .with_context(|| format!("{}: cannot read safetensors", path.display()))?;
        if tensors.is_empty() {
            bail!("{}: no tensors", path.display());
        }
        let mut names = Vec::with_capacity(tensors.len());
        // In name order, so a bad file always names the same tensor.
        let tensors: BTreeMap<String, Tensor> = tensors.into_iter().collect();
        for (name, t) in tensors {
            if !matches!(
                t.dtype(),
                DType::F32 | DType::F16 | DType::BF16 | DType::F64
            ) {
                bail!(
                    "{}: tensor {name:?} is {:?}; only float weights load (quantized checkpoints are not supported)",
                    path.display(),
                    t.dtype()
                );
            }
            check_finite(&name, &t).with_context(|| format!("{}", path.display()))?;
            self.insert(&name, t.to_dtype(dtype)?)?;
            names.push(name);
        }
        Ok(names)
    }

    /// The dtype the parameters are stored in (that of the embeddings).
    pub fn dtype(&self) -> Result<DType> {
        Ok(self.get(names::EMBED)?.dtype())
    }

    /// Writes all parameters to a safetensors file. The format sorts
    /// tensors, so equal parameters give identical bytes. Refuses (and
    /// writes nothing) when a value is NaN or infinite: a checkpoint on disk
    /// is always a usable one.
    pub fn save(&self, path: &Path) -> Result<()> {
        for (name, v) in self.vars() {
            check_finite(&name, v.as_tensor())
                .with_context(|| format!("{}: not saved", path.display()))?;
        }
        let map: std::collections::HashMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("{}: cannot write", path.display()))
    }

    /// Checks that every parameter `cfg` needs is present with the right
    /// shape (the value head too, when there is one), and that there is
    /// nothing else: a weight the model would not use means a config it
    /// misreads.
    pub fn check_against(&self, cfg: &ModelConfig) -> Result<()> {
        let mut specs = specs(cfg)?;
        if self.contains(V_HEAD) {
            specs.push((V_HEAD.to_string(), vec![1, cfg.hidden_size], Init::Zeros));
        }
        for (name, shape, _) in &specs {
            let t = self.get(name)?;
            if t.dims() != shape.as_slice() {
                bail!(
                    "parameter {name:?} has shape {:?}, config says {shape:?}",
                    t.dims()
                );
            }
        }
        for (name, _) in self.vars() {
            if name != V_HEAD && !specs.iter().any(|(n, _, _)| *n == name) {
                bail!(
                    "checkpoint has a weight {name:?} that a {} model with this config does not use",
                    cfg.model_type
                );
            }
        }
        Ok(())
    }

    /// A deep copy (new storage), e.g. a frozen reference model.
    pub fn deep_clone(&self) -> Result<Self> {
        let p = Params::empty();
        for (name, v) in self.vars() {
            p.insert(&name, v.as_tensor().copy()?)?;
        }
        Ok(p)
    }
}

/// Fails when `t` holds a NaN or an infinity, naming the tensor, the first
/// such element and how many there are.
pub fn check_finite(name: &str, t: &Tensor) -> Result<()> {
    let values: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        bail!(
            "tensor {name:?} is not finite: {bad} of {} values are NaN or infinite (the first, {}, at flat index {at})",
            values.len(),
            values[at]
        );
    }
    Ok(())
}
