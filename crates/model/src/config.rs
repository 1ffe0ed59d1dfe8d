//! The Hugging Face `config.json` of a causal LM, and which architecture
//! family it belongs to.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Architecture families. They share the Llama block and differ in details
/// the model code switches on: Qwen2 adds biases to the q/k/v projections;
/// Gemma scales embeddings by √hidden and uses (1 + w) RMSNorm weights and
/// GeGLU; Gemma 2 adds logit soft-capping and sandwich norms. Gemma and
/// Gemma 2 are recognised so that loading one fails with a clear message
/// rather than producing wrong numbers; their switches go in `llama.rs`
/// beside the Qwen2 bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Qwen2,
    Gemma,
    Gemma2,
}

impl Family {
    pub fn from_model_type(model_type: &str) -> Result<Self> {
        Ok(match model_type {
            "llama" | "mistral" => Family::Llama,
            "qwen2" => Family::Qwen2,
            "gemma" => Family::Gemma,
            "gemma2" => Family::Gemma2,
            other => {
                bail!("model_type {other:?} is not supported (supported: llama, mistral, qwen2)")
            }
        })
    }
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

fn default_theta() -> f64 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
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
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// Keys this toolkit does not use, kept so a loaded config saves back
    /// unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
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
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_word_embeddings: false,
            attention_bias: None,
            hidden_act: "silu".into(),
            bos_token_id: Some(1),
            eos_token_id: Some(TokenIds::One(2)),
            pad_token_id: Some(0),
            rope_scaling: None,
            torch_dtype: Some("float32".into()),
            extra: Default::default(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let cfg: ModelConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid model config", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }

    pub fn family(&self) -> Result<Family> {
        Family::from_model_type(&self.model_type)
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Whether q/k/v projections carry biases (Qwen2 does by default).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias
            .unwrap_or(matches!(self.family(), Ok(Family::Qwen2)))
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(|e| e.ids())
            .unwrap_or_default()
    }

    pub fn validate(&self) -> Result<()> {
        match self.family()? {
            Family::Llama | Family::Qwen2 => {}
            f => bail!(
                "model family {f:?} is recognised but not implemented yet (supported: Llama, Qwen2)"
            ),
        }
        if self.hidden_act != "silu" {
            bail!(
                "hidden_act {:?} is not supported (silu only)",
                self.hidden_act
            );
        }
        if let Some(s) = &self.rope_scaling {
            if !s.is_null() {
                bail!("rope_scaling {s} is not supported yet");
            }
        }
        let h = self.num_attention_heads;
        if h == 0 || self.kv_heads() == 0 || !h.is_multiple_of(self.kv_heads()) {
            bail!(
                "num_attention_heads {h} must be a positive multiple of num_key_value_heads {}",
                self.kv_heads()
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!(
                "head dimension {} must be even for rotary embeddings",
                self.head_dim()
            );
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            bail!("vocab_size, hidden_size and num_hidden_layers must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_qwen2_config_and_keeps_unknown_keys() {
        let text = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2",
            "vocab_size":151936,"hidden_size":896,"intermediate_size":4864,
            "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,
            "max_position_embeddings":32768,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
            "tie_word_embeddings":true,"bos_token_id":151643,"eos_token_id":151645,
            "sliding_window":32768,"use_cache":true}"#;
        let cfg: ModelConfig = serde_json::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.family().unwrap(), Family::Qwen2);
        assert!(cfg.qkv_bias());
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.kv_heads(), 2);
        assert_eq!(cfg.extra["sliding_window"], 32768);
        let back: ModelConfig = serde_json::from_str(&cfg.to_json().unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn gemma_is_recognised_but_refused_clearly() {
        let mut cfg = ModelConfig::tiny_llama(16, 8, 1, 2, 16);
        cfg.model_type = "gemma2".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("Gemma2") && err.contains("not implemented"),
            "{err}"
        );
    }
}
