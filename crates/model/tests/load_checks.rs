//! Issue 13, item 8: a checkpoint that cannot work is refused when it is
//! loaded, naming the file and what is wrong — not later, inside candle.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use marlhf_model::checkpoint::{save_into, CONFIG, WEIGHTS};
use marlhf_model::{Checkpoint, ModelConfig, Params};

fn tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer.json")
}

/// A tiny checkpoint for the 23-token fixture tokenizer, with a value head.
fn checkpoint(tag: &str, vocab: usize) -> (PathBuf, ModelConfig) {
    let dir = std::env::temp_dir().join(format!("marlhf-load-checks-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = ModelConfig::tiny_llama(vocab, 8, 1, 2, 16);
    cfg.eos_token_id = Some(marlhf_model::config::TokenIds::One(2));
    let params = Params::init(&cfg, 1, &Device::Cpu).unwrap();
    params.add_value_head(&cfg, 1).unwrap();
    save_into(&dir, &cfg, &params, &tokenizer()).unwrap();
    (dir, cfg)
}

fn load_error(dir: &Path) -> String {
    format!(
        "{:#}",
        Checkpoint::load(dir, &Device::Cpu)
            .err()
            .expect("must be refused")
    )
}

fn replace_tensor(dir: &Path, name: &str, t: Tensor) {
    let path = dir.join(WEIGHTS);
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.insert(name.to_string(), t);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

#[test]
fn a_sound_checkpoint_loads() {
    let (dir, _) = checkpoint("sound", 23);
    let ck = Checkpoint::load(&dir, &Device::Cpu).unwrap();
    assert!(ck.model.v_head.is_some());
}

#[test]
fn special_token_ids_beyond_the_vocabulary_are_refused() {
    let (dir, mut cfg) = checkpoint("eos", 23);
    cfg.eos_token_id = Some(marlhf_model::config::TokenIds::One(99_999));
    std::fs::write(dir.join(CONFIG), cfg.to_json().unwrap()).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("config.json")
            && err.contains("eos_token_id 99999")
            && err.contains("vocab_size 23"),
        "{err}"
    );
}

#[test]
fn a_value_head_of_the_wrong_shape_is_refused() {
    let (dir, cfg) = checkpoint("vhead", 23);
    replace_tensor(
        &dir,
        "v_head.weight",
        Tensor::zeros((1, cfg.hidden_size + 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load_error(&dir);
    assert!(
        err.contains("v_head.weight") && err.contains("[1, 11]") && err.contains("[1, 8]"),
        "{err}"
    );
}

#[test]
fn integer_weights_are_refused() {
    let (dir, cfg) = checkpoint("i32", 23);
    let t = Tensor::zeros(cfg.hidden_size, DType::I64, &Device::Cpu).unwrap();
    replace_tensor(&dir, "model.norm.weight", t);
    let err = load_error(&dir);
    assert!(
        err.contains("model.safetensors")
            && err.contains("model.norm.weight")
            && err.contains("I64"),
        "{err}"
    );
}

#[test]
fn a_tokenizer_far_smaller_than_the_model_is_refused() {
    // 23 tokens for a 4096-token model: not this model's tokenizer.
    let (dir, _) = checkpoint("small-tok", 4096);
    let err = load_error(&dir);
    assert!(
        err.contains("tokenizer.json") && err.contains("23") && err.contains("4096"),
        "{err}"
    );
    // Padding the embedding to a round size is normal.
    let (dir, _) = checkpoint("padded", 64);
    Checkpoint::load(&dir, &Device::Cpu).unwrap();
}
