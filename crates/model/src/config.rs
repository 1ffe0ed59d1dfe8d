//! The Hugging Face `config.json` of a causal LM: which architecture family
//! it belongs to, the settings the model code switches on, and the refusal
//! of every setting it does not implement.
//!
//! Every key of a loaded config is either interpreted, checked to have the
//! value the code assumes, or known not to change the numbers a forward
//! pass computes (metadata, generation defaults). Anything else is refused
//! with the key's name: a silently ignored setting gives wrong numbers
//! without a word. Saving writes back every key that was read, so a config
//! keeps its layout (transformers ≥ 5's `rope_parameters` or the older
//! top-level `rope_theta` / `rope_scaling`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rope::Rope;

/// Architecture families. They share the Llama block and differ in the
/// details the model code switches on (see `Family::traits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma,
    Gemma2,
}

pub const SUPPORTED_MODEL_TYPES: &str = "llama, mistral, qwen2, qwen3, gemma, gemma2";

impl Family {
    pub fn from_model_type(model_type: &str) -> Result<Self> {
        Ok(match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma" => Family::Gemma,
            "gemma2" => Family::Gemma2,
            other => {
                bail!("model_type {other:?} is not supported (supported: {SUPPORTED_MODEL_TYPES})")
            }
        })
    }

    pub fn is_gemma(self) -> bool {
        matches!(self, Family::Gemma | Family::Gemma2)
    }

    /// transformers' default for `tie_word_embeddings` when a config omits it.
    fn ties_by_default(self) -> bool {
        self.is_gemma()
    }

    /// Untyped keys of this family's config class that the code reads.
    fn own_keys(self) -> &'static [&'static str] {
        match self {
            Family::Llama => &["mlp_bias"],
            Family::Qwen2 | Family::Qwen3 => &["use_sliding_window", "max_window_layers"],
            _ => &[],
        }
    }
}

/// The MLP's activation (the gate of a gated MLP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// tanh approximation: transformers' `gelu_pytorch_tanh` and `gelu_new`.
    GeluTanh,
    /// exact (erf): transformers' `gelu`.
    Gelu,
}

impl Activation {
    fn parse(name: &str, key: &str) -> Result<Self> {
        Ok(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => bail!(
                "{key} {other:?} is not implemented (supported: silu, gelu, gelu_pytorch_tanh, gelu_new)"
            ),
        })
    }
}

/// Which keys attend to a query in one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// Every earlier position.
    Full,
    /// Positions less than `window` tokens back (the query included).
    Sliding(usize),
}

/// Everything the decoder switches on, resolved from a config once.
#[derive(Clone, Debug, PartialEq)]
pub struct Arch {
    pub family: Family,
    pub activation: Activation,
    /// Bias on the q/k/v projections; on o as well when `o_bias`.
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Qwen3: RMSNorm over each head of q and k before RoPE.
    pub qk_norm: bool,
    /// Gemma: embeddings × √hidden, RMSNorm weights stored as w − 1.
    pub embed_scale: bool,
    pub norm_one_plus: bool,
    /// Gemma 2: norms after attention and after the MLP as well as before.
    pub sandwich_norms: bool,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Attention logits are scaled by 1/√scalar.
    pub query_scale: f64,
    pub layers: Vec<Attention>,
    pub rope: Rope,
    pub tied: bool,
}

/// EOS may be one id or a list (Llama 3 lists several).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn ids(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// A model's `config.json`. Keys that transformers fills with a family
/// default when absent are `Option`s here, so saving never adds a key the
/// file did not have; the accessors apply the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    /// Pre-transformers-5 layout: the RoPE base at the top level…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// … and its frequency scaling here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<Value>,
    /// transformers ≥ 5 layout: `rope_theta`, `rope_type` and the scaling
    /// parameters in one object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_activation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// The weights' dtype as transformers < 5 writes it …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// … and as transformers ≥ 5 does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    /// A number as written (transformers writes an integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<serde_json::Number>,
    /// Keys this toolkit does not interpret (checked by `validate`), kept
    /// so a loaded config saves back with all of them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Interpreted keys that the file set to `null`, written back as such.
    #[serde(skip)]
    pub null_keys: Vec<String>,
}

/// Keys that do not change what a forward pass computes: provenance,
/// serving and generation defaults, and PretrainedConfig's generic fields
/// (checked for the values a plain causal LM has where they could matter).
const INERT_KEYS: &[&str] = &[
    "transformers_version",
    "_name_or_path",
    "name_or_path",
    "initializer_range",
    "use_cache",
    "cache_implementation",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "use_return_dict",
    "torchscript",
    "use_bfloat16",
    "tf_legacy_loss",
    "tokenizer_class",
    "sep_token_id",
    "decoder_start_token_id",
    "prefix",
    "problem_type",
    "finetuning_task",
    "id2label",
    "label2id",
    "task_specific_params",
    "chunk_size_feed_forward",
    "is_decoder",
    "cross_attention_hidden_size",
    "tie_encoder_decoder",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
];

/// Keys that are harmless only at one value (a feature off).
fn must_be_off(key: &str, v: &Value) -> Option<String> {
    let off = match key {
        "attention_dropout" => v.as_f64() == Some(0.0),
        "mlp_bias" => v.is_null() || v == &Value::Bool(false),
        "pretraining_tp" => true, // a sliced matmul, the same numbers
        "is_encoder_decoder" | "add_cross_attention" | "use_bidirectional_attention" => {
            v.is_null() || v == &Value::Bool(false)
        }
        "pruned_heads" => v.as_object().is_some_and(|m| m.is_empty()),
        "partial_rotary_factor" => v.as_f64() == Some(1.0),
        _ => return None,
    };
    Some(if off {
        String::new()
    } else {
        format!("{key} = {v} is not implemented (only its default is)")
    })
}

fn default_eps() -> f64 {
    1e-6
}

impl ModelConfig {
    /// A small Llama for training from scratch with a trained tokenizer.
    pub fn tiny_llama(
        vocab_size: usize,
        hidden: usize,
        layers: usize,
        heads: usize,
        mlp: usize,
    ) -> Self {
        ModelConfig {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            vocab_size,
            hidden_size: hidden,
            intermediate_size: mlp,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(heads),
            head_dim: None,
            max_position_embeddings: 1024,
            rms_norm_eps: Some(1e-5),
            rope_theta: Some(10_000.0),
            rope_scaling: None,
            rope_parameters: None,
            tie_word_embeddings: Some(false),
            attention_bias: None,
            hidden_act: Some("silu".into()),
            hidden_activation: None,
            bos_token_id: Some(1),
            eos_token_id: Some(TokenIds::One(2)),
            pad_token_id: Some(0),
            torch_dtype: Some("float32".into()),
            dtype: None,
            sliding_window: None,
            layer_types: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            query_pre_attn_scalar: None,
            extra: Default::default(),
            null_keys: Vec::new(),
        }
    }

    /// Parses a config.json text (not yet validated).
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: Map<String, Value> = serde_json::from_str(text)?;
        let mut cfg: ModelConfig = serde_json::from_value(Value::Object(raw.clone()))?;
        cfg.null_keys = raw
            .iter()
            .filter(|(k, v)| v.is_null() && !cfg.extra.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let cfg = ModelConfig::from_json(&text)
            .with_context(|| format!("{}: not a valid model config", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> Result<String> {
        let mut v = serde_json::to_value(self)?;
        if let Value::Object(m) = &mut v {
            for k in &self.null_keys {
                m.entry(k.clone()).or_insert(Value::Null);
            }
        }
        Ok(serde_json::to_string_pretty(&v)? + "\n")
    }

    /// Records the dtype the weights are saved in, under whichever key the
    /// config uses (both when it has both; `torch_dtype` when neither).
    pub fn set_saved_dtype(&mut self, name: &str) {
        match (self.dtype.is_some(), self.torch_dtype.is_some()) {
            (false, false) => self.torch_dtype = Some(name.into()),
            (new, old) => {
                if new {
                    self.dtype = Some(name.into());
                }
                if old {
                    self.torch_dtype = Some(name.into());
                }
            }
        }
    }

    pub fn family(&self) -> Result<Family> {
        Family::from_model_type(&self.model_type)
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn eps(&self) -> f64 {
        self.rms_norm_eps.unwrap_or_else(default_eps)
    }

    pub fn tied(&self) -> bool {
        self.tie_word_embeddings
            .unwrap_or_else(|| self.family().is_ok_and(|f| f.ties_by_default()))
    }

    /// Whether q/k/v projections carry biases (Qwen2 always does).
    pub fn qkv_bias(&self) -> bool {
        match self.family() {
            Ok(Family::Qwen2) => true,
            _ => self.attention_bias.unwrap_or(false),
        }
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(|e| e.ids())
            .unwrap_or_default()
    }

    /// The resolved architecture; refuses anything not implemented.
    pub fn arch(&self) -> Result<Arch> {
        let family = self.family()?;
        self.check_keys(family)?;
        let activation = if family.is_gemma() {
            // transformers' Gemma MLP reads `hidden_activation` (tanh GELU
            // when unset); `hidden_act` is not used.
            Activation::parse(
                self.hidden_activation
                    .as_deref()
                    .unwrap_or("gelu_pytorch_tanh"),
                "hidden_activation",
            )?
        } else {
            Activation::parse(self.hidden_act.as_deref().unwrap_or("silu"), "hidden_act")?
        };
        let mlp_bias = family == Family::Llama
            && self.extra.get("mlp_bias").and_then(Value::as_bool) == Some(true);
        let gemma2 = family == Family::Gemma2;
        let query_scale = match (
            gemma2,
            self.query_pre_attn_scalar.as_ref().and_then(|n| n.as_f64()),
        ) {
            (true, Some(s)) if s > 0.0 => s,
            (true, None) => 256.0, // transformers' Gemma2Config default
            (true, Some(s)) => bail!("query_pre_attn_scalar {s} must be positive"),
            (false, _) => self.head_dim() as f64,
        };
        let softcap = |v: Option<f64>, key: &str| -> Result<Option<f64>> {
            match v {
                Some(c) if c <= 0.0 => bail!("{key} {c} must be positive"),
                v => Ok(v),
            }
        };
        Ok(Arch {
            family,
            activation,
            qkv_bias: self.qkv_bias(),
            o_bias: family != Family::Qwen2 && self.attention_bias.unwrap_or(false),
            mlp_bias,
            qk_norm: family == Family::Qwen3,
            embed_scale: family.is_gemma(),
            norm_one_plus: family.is_gemma(),
            sandwich_norms: gemma2,
            attn_softcap: softcap(self.attn_logit_softcapping, "attn_logit_softcapping")?,
            final_softcap: softcap(self.final_logit_softcapping, "final_logit_softcapping")?,
            query_scale,
            layers: self.attention_layers(family)?,
            rope: Rope::from_config(self)?,
            tied: self.tied(),
        })
    }

    /// Every key must be interpreted by this family or known to be inert.
    fn check_keys(&self, family: Family) -> Result<()> {
        for (key, value) in &self.extra {
            let k = key.as_str();
            if INERT_KEYS.contains(&k) || family.own_keys().contains(&k) {
                continue;
            }
            match must_be_off(k, value) {
                Some(msg) if msg.is_empty() => continue,
                Some(msg) => bail!("{msg}"),
                None => bail!(
                    "config key {k:?} (= {value}) is not implemented for model_type {:?}; refusing rather than ignoring it",
                    self.model_type
                ),
            }
        }
        // Interpreted keys that only some families read.
        let gemma2 = family == Family::Gemma2;
        let set = |v: bool, key: &str| -> Result<()> {
            if v {
                bail!(
                    "config key {key:?} is not used by model_type {:?} in transformers; refusing rather than ignoring it",
                    self.model_type
                );
            }
            Ok(())
        };
        set(
            !gemma2 && self.attn_logit_softcapping.is_some(),
            "attn_logit_softcapping",
        )?;
        set(
            !gemma2 && self.final_logit_softcapping.is_some(),
            "final_logit_softcapping",
        )?;
        set(
            !gemma2 && self.query_pre_attn_scalar.is_some(),
            "query_pre_attn_scalar",
        )?;
        set(
            !family.is_gemma() && self.hidden_activation.is_some(),
            "hidden_activation",
        )?;
        set(
            self.layer_types.is_some()
                && !matches!(family, Family::Qwen2 | Family::Qwen3 | Family::Gemma2),
            "layer_types",
        )?;
        set(
            self.sliding_window.is_some() && matches!(family, Family::Llama | Family::Gemma),
            "sliding_window",
        )?;
        Ok(())
    }

    /// Full or sliding-window attention per layer, as transformers decides.
    fn attention_layers(&self, family: Family) -> Result<Vec<Attention>> {
        let n = self.num_hidden_layers;
        // The window sliding layers use, if any.
        let window = match family {
            Family::Qwen2 | Family::Qwen3 => {
                let on = self
                    .extra
                    .get("use_sliding_window")
                    .and_then(Value::as_bool);
                if on == Some(true) {
                    self.sliding_window
                } else {
                    None
                }
            }
            Family::Gemma2 => Some(self.sliding_window.unwrap_or(4096)),
            _ => self.sliding_window,
        };
        if window == Some(0) {
            bail!("sliding_window must be positive");
        }
        let kinds: Vec<bool> = match &self.layer_types {
            Some(types) => {
                if types.len() != n {
                    bail!("layer_types has {} entries for {n} layers", types.len());
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(false),
                        "sliding_attention" => Ok(true),
                        other => bail!(
                            "layer type {other:?} is not implemented (supported: full_attention, sliding_attention)"
                        ),
                    })
                    .collect::<Result<_>>()?
            }
            None => (0..n)
                .map(|i| match family {
                    Family::Mistral => true,
                    // Gemma 2 alternates, starting with a sliding layer.
                    Family::Gemma2 => i % 2 == 0,
                    Family::Qwen2 | Family::Qwen3 => {
                        let first = self
                            .extra
                            .get("max_window_layers")
                            .and_then(Value::as_u64)
                            .unwrap_or(28) as usize;
                        i >= first
                    }
                    _ => false,
                })
                .collect(),
        };
        Ok(kinds
            .into_iter()
            .map(|sliding| match (sliding, window) {
                (true, Some(w)) => Attention::Sliding(w),
                _ => Attention::Full,
            })
            .collect())
    }

    pub fn validate(&self) -> Result<()> {
        self.arch()?;
        let h = self.num_attention_heads;
        if h == 0 || self.kv_heads() == 0 || !h.is_multiple_of(self.kv_heads()) {
            bail!(
                "num_attention_heads {h} must be a positive multiple of num_key_value_heads {}",
                self.kv_heads()
            );
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            bail!(
                "head dimension {} must be even and positive for rotary embeddings",
                self.head_dim()
            );
        }
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.num_hidden_layers == 0
            || self.intermediate_size == 0
            || self.max_position_embeddings == 0
        {
            bail!("vocab_size, hidden_size, intermediate_size, num_hidden_layers and max_position_embeddings must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ModelConfig {
        ModelConfig::from_json(text).unwrap()
    }

    #[test]
    fn parses_a_qwen2_config_and_keeps_every_key() {
        let text = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2",
            "vocab_size":151936,"hidden_size":896,"intermediate_size":4864,
            "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,
            "max_position_embeddings":32768,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
            "tie_word_embeddings":true,"bos_token_id":151643,"eos_token_id":151645,
            "sliding_window":32768,"use_sliding_window":false,"max_window_layers":21,
            "use_cache":true,"pad_token_id":null,"rope_scaling":null}"#;
        let cfg = parse(text);
        cfg.validate().unwrap();
        let arch = cfg.arch().unwrap();
        assert_eq!(arch.family, Family::Qwen2);
        assert!(arch.qkv_bias && !arch.o_bias);
        assert!(arch.layers.iter().all(|l| *l == Attention::Full));
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.kv_heads(), 2);
        assert_eq!(cfg.extra["use_cache"], true);
        let back = ModelConfig::from_json(&cfg.to_json().unwrap()).unwrap();
        assert_eq!(back, cfg);
        // The same keys, nulls included.
        let a: Map<String, Value> = serde_json::from_str(text).unwrap();
        let b: Map<String, Value> = serde_json::from_str(&cfg.to_json().unwrap()).unwrap();
        assert_eq!(
            a.keys().collect::<std::collections::BTreeSet<_>>(),
            b.keys().collect::<std::collections::BTreeSet<_>>()
        );
        assert_eq!(b["pad_token_id"], Value::Null);
    }

    fn llama_with(extra: &str) -> String {
        format!(
            r#"{{"model_type":"llama","vocab_size":16,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":2,"max_position_embeddings":32{extra}}}"#
        )
    }

    fn refusal(extra: &str) -> String {
        parse(&llama_with(extra))
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_or_unimplemented_settings_are_refused_by_name() {
        let e = refusal(r#","quantization_config":{"bits":4}"#);
        assert!(
            e.contains("\"quantization_config\"") && e.contains("not implemented"),
            "{e}"
        );
        let e = refusal(r#","attention_dropout":0.1"#);
        assert!(e.contains("attention_dropout = 0.1"), "{e}");
        let e = refusal(r#","attn_logit_softcapping":50.0"#);
        assert!(
            e.contains("attn_logit_softcapping") && e.contains("llama"),
            "{e}"
        );
        let e = refusal(r#","hidden_act":"relu""#);
        assert!(e.contains("hidden_act \"relu\""), "{e}");
        parse(&llama_with(
            r#","mlp_bias":false,"pretraining_tp":1,"attention_dropout":0.0,"use_cache":true"#,
        ))
        .validate()
        .unwrap();
    }

    #[test]
    fn refusals_are_one_line() {
        for extra in [
            r#","rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
            r#","rope_parameters":{"rope_type":"dynamic","factor":2.0,"rope_theta":1e4}"#,
            r#","sliding_window":128"#,
        ] {
            let e = refusal(extra);
            assert!(!e.is_empty() && !e.contains('\n'), "{extra}: {e}");
        }
    }

    #[test]
    fn family_defaults() {
        let mut cfg = parse(&llama_with(""));
        assert!(!cfg.tied());
        cfg.model_type = "gemma".into();
        let arch = cfg.arch().unwrap();
        assert!(arch.tied && arch.embed_scale && arch.norm_one_plus);
        assert_eq!(arch.activation, Activation::GeluTanh);
        cfg.model_type = "gemma2".into();
        let arch = cfg.arch().unwrap();
        assert_eq!(arch.layers, vec![Attention::Sliding(4096), Attention::Full]);
        assert_eq!(arch.query_scale, 256.0);
        cfg.model_type = "mistral".into();
        cfg.sliding_window = Some(3);
        assert_eq!(cfg.arch().unwrap().layers, vec![Attention::Sliding(3); 2]);
        cfg.model_type = "phi3".into();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("\"phi3\" is not supported"), "{e}");
    }

    #[test]
    fn saved_dtype_goes_under_the_key_the_config_uses() {
        let mut cfg = parse(&llama_with(r#","dtype":"bfloat16""#));
        cfg.set_saved_dtype("float32");
        assert_eq!(cfg.dtype.as_deref(), Some("float32"));
        assert_eq!(cfg.torch_dtype, None);
        let mut cfg = parse(&llama_with(""));
        cfg.set_saved_dtype("float32");
        assert_eq!(cfg.torch_dtype.as_deref(), Some("float32"));
        assert_eq!(cfg.dtype, None);
    }
}
