//! `adapter_config.json` as PEFT writes it: every key is interpreted,
//! either as a setting this implementation follows (rank, alpha, rsLoRA,
//! dropout, the target modules, the base model) or checked to have the
//! value that leaves a feature off (DoRA, `modules_to_save`, rank and alpha
//! patterns, biases, `layers_to_transform`, `fan_in_fan_out`…). A feature
//! that is on and not implemented is refused in one line naming the key,
//! never ignored.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::Target;

/// The LoRA adapter an `adapter_config.json` describes.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// `base_model_name_or_path` as written: a directory, relative to the
    /// adapter's directory (or, failing that, to the working directory) or
    /// absolute (`lora::resolve_base`).
    pub base_model: String,
    pub r: usize,
    pub alpha: f64,
    /// rsLoRA: the adapter is scaled by alpha/√r instead of alpha/r.
    pub rslora: bool,
    /// Dropout on the adapter's input while training (PEFT's `lora_dropout`).
    pub dropout: f64,
    /// The adapted projections, in the canonical order of [`Target::ALL`].
    pub targets: Vec<Target>,
}

impl AdapterConfig {
    /// The factor the adapter's output B·A·x is multiplied by: alpha/r, or
    /// alpha/√r with rsLoRA (PEFT's `scaling`).
    pub fn scaling(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        AdapterConfig::from_json(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).context("not valid JSON")?;
        let Value::Object(map) = v else {
            bail!("not a JSON object");
        };
        let mut cfg = AdapterConfig {
            base_model: String::new(),
            r: 0,
            alpha: 0.0,
            rslora: false,
            dropout: 0.0,
            targets: Vec::new(),
        };
        let (mut has_r, mut has_alpha, mut has_targets) = (false, false, false);
        for (key, value) in &map {
            match key.as_str() {
                "peft_type" => match value.as_str() {
                    Some("LORA") => {}
                    _ => bail!(
                        "peft_type {value} is not implemented (only \"LORA\"); refusing rather than ignoring it"
                    ),
                },
                "r" => {
                    cfg.r = match value.as_u64() {
                        Some(r) if r > 0 => r as usize,
                        _ => bail!("r must be a positive integer, got {value}"),
                    };
                    has_r = true;
                }
                "lora_alpha" => {
                    cfg.alpha = match value.as_f64() {
                        Some(a) if a.is_finite() => a,
                        _ => bail!("lora_alpha must be a number, got {value}"),
                    };
                    has_alpha = true;
                }
                "use_rslora" => {
                    cfg.rslora = value
                        .as_bool()
                        .with_context(|| format!("use_rslora must be true or false, got {value}"))?
                }
                "lora_dropout" => {
                    cfg.dropout = match value.as_f64() {
                        Some(p) if (0.0..1.0).contains(&p) => p,
                        _ => bail!("lora_dropout must be a number in [0, 1), got {value}"),
                    }
                }
                "target_modules" => {
                    cfg.targets = parse_targets(value)?;
                    has_targets = true;
                }
                "base_model_name_or_path" => match value.as_str() {
                    Some(s) if !s.is_empty() => cfg.base_model = s.to_string(),
                    _ => bail!(
                        "base_model_name_or_path must name the base model's directory, got {value}"
                    ),
                },
                "task_type" => match value {
                    Value::Null => {}
                    Value::String(s) if s == "CAUSAL_LM" => {}
                    _ => refuse(key, value, "only CAUSAL_LM adapters are implemented")?,
                },
                "bias" => {
                    if value.as_str() != Some("none") {
                        refuse(key, value, "trained biases are not implemented")?
                    }
                }
                "init_lora_weights" => match value {
                    // How A and B were initialised; the saved weights are
                    // what they are. Other initialisations (PiSSA, OLoRA,
                    // CorDA, LoftQ…) rewrite the base weights as well.
                    Value::Bool(_) => {}
                    Value::String(s) if s == "gaussian" => {}
                    _ => refuse(key, value, "it rewrites the base weights")?,
                },
                // Metadata, or settings that only matter for features that
                // are checked to be off (qalora_group_size needs use_qalora,
                // ensure_weight_tying needs an adapted embedding).
                "peft_version" | "revision" | "inference_mode" | "auto_mapping"
                | "megatron_core" | "qalora_group_size" | "ensure_weight_tying" => {}
                // Features that must be off.
                _ if is_off(value) => {}
                _ => refuse(key, value, "this adapter feature is not implemented")?,
            }
        }
        if !has_r || !has_alpha || !has_targets {
            bail!("r, lora_alpha and target_modules are required");
        }
        if cfg.base_model.is_empty() {
            bail!("no base_model_name_or_path: the adapter does not say which model it adapts");
        }
        Ok(cfg)
    }

    /// The config PEFT reads: its keys for what this adapter is, every
    /// other feature named as off.
    pub fn to_json(&self) -> Result<String> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("alpha_pattern", Value::Object(Map::new()));
        put("base_model_name_or_path", self.base_model.clone().into());
        put("bias", "none".into());
        put("fan_in_fan_out", false.into());
        put("inference_mode", true.into());
        put("init_lora_weights", true.into());
        put("layers_pattern", Value::Null);
        put("layers_to_transform", Value::Null);
        put("lora_alpha", number(self.alpha));
        put("lora_dropout", number(self.dropout));
        put("modules_to_save", Value::Null);
        put("peft_type", "LORA".into());
        put("r", self.r.into());
        put("rank_pattern", Value::Object(Map::new()));
        put("revision", Value::Null);
        put(
            "target_modules",
            self.targets
                .iter()
                .map(|t| Value::from(t.peft_name()))
                .collect(),
        );
        put("task_type", "CAUSAL_LM".into());
        put("use_dora", false.into());
        put("use_rslora", self.rslora.into());
        Ok(serde_json::to_string_pretty(&Value::Object(m))? + "\n")
    }
}

/// An integral value as an integer (`16`, as PEFT writes it), any other as
/// a float.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

/// null, false, an empty string, list or object: a feature left off.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn refuse(key: &str, value: &Value, why: &str) -> Result<()> {
    let mut shown = value.to_string();
    if shown.len() > 80 {
        shown.truncate(77);
        shown.push_str("...");
    }
    bail!("{key} = {shown} is not implemented ({why}); refusing rather than ignoring it")
}

/// PEFT's `target_modules`: a list of module names, or `"all-linear"`
/// (every linear layer but the output layer: the seven projections here).
/// A string other than that is a regular expression over module paths,
/// which is not implemented.
fn parse_targets(value: &Value) -> Result<Vec<Target>> {
    let names: Vec<&str> = match value {
        Value::String(s) if s == "all-linear" => return Ok(Target::ALL.to_vec()),
        Value::String(_) => {
            return refuse(
                "target_modules",
                value,
                "a regular expression over module paths; list the module names instead",
            )
            .map(|_| Vec::new())
        }
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .with_context(|| format!("target_modules: {v} is not a module name"))
            })
            .collect::<Result<_>>()?,
        _ => bail!("target_modules must be a list of module names, got {value}"),
    };
    let mut targets = Vec::with_capacity(names.len());
    for name in names {
        let Some(t) = Target::from_peft_name(name) else {
            bail!(
                "target_modules: {name:?} is not implemented (supported: {}); refusing rather than ignoring it",
                Target::ALL.map(Target::peft_name).join(", ")
            );
        };
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.is_empty() {
        bail!("target_modules is empty: the adapter adapts nothing");
    }
    targets.sort();
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEFT: &str = r#"{
      "alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null,
      "auto_mapping": null, "base_model_name_or_path": "../../hf-tiny/llama", "bias": "none",
      "corda_config": null, "ensure_weight_tying": false, "eva_config": null,
      "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true,
      "init_lora_weights": true, "kasa_config": null, "layer_replication": null,
      "layers_pattern": null, "layers_to_transform": null, "loftq_config": {},
      "lora_alpha": 16, "lora_bias": false, "lora_dropout": 0.0, "lora_ga_config": null,
      "megatron_config": null, "megatron_core": "megatron.core", "modules_to_save": null,
      "monteclora_config": null, "peft_type": "LORA", "peft_version": "0.21.2",
      "qalora_group_size": 16, "r": 8, "rank_pattern": {}, "revision": null,
      "target_modules": ["q_proj", "o_proj", "k_proj", "v_proj"], "target_parameters": null,
      "task_type": "CAUSAL_LM", "trainable_token_indices": null, "use_bdlora": null,
      "use_dora": false, "use_qalora": false, "use_rslora": false, "velora_config": null
    }"#;

    #[test]
    fn peft_config_reads_and_round_trips() {
        let c = AdapterConfig::from_json(PEFT).unwrap();
        assert_eq!(c.r, 8);
        assert_eq!(c.alpha, 16.0);
        assert_eq!(c.scaling(), 2.0);
        assert_eq!(c.targets, vec![Target::Q, Target::K, Target::V, Target::O]);
        assert_eq!(c.base_model, "../../hf-tiny/llama");
        let back = AdapterConfig::from_json(&c.to_json().unwrap()).unwrap();
        assert_eq!(back, c);
        let rs = AdapterConfig {
            rslora: true,
            r: 16,
            alpha: 8.0,
            ..c
        };
        assert_eq!(rs.scaling(), 2.0);
        let all = PEFT.replace(
            r#"["q_proj", "o_proj", "k_proj", "v_proj"]"#,
            r#""all-linear""#,
        );
        assert_eq!(
            AdapterConfig::from_json(&all).unwrap().targets,
            Target::ALL.to_vec()
        );
    }

    #[test]
    fn features_that_are_on_are_refused_in_one_line() {
        for (from, to, needle) in [
            (
                "\"use_dora\": false",
                "\"use_dora\": true",
                "use_dora = true",
            ),
            (
                "\"modules_to_save\": null",
                "\"modules_to_save\": [\"lm_head\"]",
                "modules_to_save = [\"lm_head\"]",
            ),
            (
                "\"rank_pattern\": {}",
                "\"rank_pattern\": {\"q_proj\": 4}",
                "rank_pattern",
            ),
            (
                "\"alpha_pattern\": {}",
                "\"alpha_pattern\": {\"q_proj\": 4}",
                "alpha_pattern",
            ),
            ("\"bias\": \"none\"", "\"bias\": \"all\"", "bias = \"all\""),
            (
                "\"layers_to_transform\": null",
                "\"layers_to_transform\": [0]",
                "layers_to_transform",
            ),
            (
                "\"fan_in_fan_out\": false",
                "\"fan_in_fan_out\": true",
                "fan_in_fan_out",
            ),
            (
                "[\"q_proj\", \"o_proj\", \"k_proj\", \"v_proj\"]",
                "\".*q_proj\"",
                "regular expression",
            ),
            (
                "[\"q_proj\", \"o_proj\", \"k_proj\", \"v_proj\"]",
                "[\"q_proj\", \"lm_head\"]",
                "\"lm_head\" is not implemented",
            ),
            (
                "\"peft_type\": \"LORA\"",
                "\"peft_type\": \"IA3\"",
                "peft_type \"IA3\"",
            ),
            (
                "\"init_lora_weights\": true",
                "\"init_lora_weights\": \"pissa\"",
                "rewrites the base weights",
            ),
            (
                "\"task_type\": \"CAUSAL_LM\"",
                "\"task_type\": \"SEQ_CLS\"",
                "task_type",
            ),
            (
                "\"use_qalora\": false",
                "\"use_qalora\": true",
                "use_qalora",
            ),
            ("\"lora_bias\": false", "\"lora_bias\": true", "lora_bias"),
            (
                "\"velora_config\": null",
                "\"velora_config\": null, \"some_future_feature\": 3",
                "some_future_feature = 3",
            ),
        ] {
            assert!(PEFT.contains(from), "{from}");
            let e = AdapterConfig::from_json(&PEFT.replace(from, to))
                .err()
                .unwrap_or_else(|| panic!("{to} accepted"));
            let e = format!("{e:#}");
            assert!(e.contains(needle) && !e.contains('\n'), "{to}: {e}");
        }
        // A future key that leaves its feature off is read as off.
        let off = PEFT.replace(
            "\"velora_config\": null",
            "\"velora_config\": null, \"another_feature\": null",
        );
        assert!(AdapterConfig::from_json(&off).is_ok());
    }
}
