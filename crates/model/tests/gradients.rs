//! Gradients of the whole model, checked by central finite differences in
//! f64 (the composite path; the fused f32 kernels are checked against it in
//! `ops`), and checkpoint save/load round trips.

use candle_core::{DType, Device, Tensor};
use marlhf_model::lm::Scored;
use marlhf_model::{checkpoint, Checkpoint, Model, ModelConfig, Params};

fn tiny(dtype: DType, bias: bool) -> Model {
    let mut cfg = ModelConfig::tiny_llama(23, 8, 2, 2, 12);
    cfg.num_key_value_heads = Some(1);
    cfg.max_position_embeddings = 16;
    if bias {
        cfg.model_type = "qwen2".into();
    }
    build(cfg, dtype)
}

/// Gemma 2 with every switch on and small enough caps that the tanh is far
/// from linear: soft-capped attention (scores reach about ±5) and logits,
/// a 3-token sliding window that masks keys in the 6-token rows, a query
/// scalar that is not head_dim, head_dim ≠ hidden/heads, sandwich norms
/// stored as w − 1, GeGLU, tied embeddings.
fn gemma2(dtype: DType) -> Model {
    let cfg = ModelConfig::from_json(
        r#"{"model_type":"gemma2","vocab_size":23,"hidden_size":8,"intermediate_size":12,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":6,
        "max_position_embeddings":16,"rms_norm_eps":1e-6,"attn_logit_softcapping":2.0,
        "final_logit_softcapping":3.0,"query_pre_attn_scalar":5,"sliding_window":3,
        "layer_types":["sliding_attention","full_attention"],
        "hidden_activation":"gelu_pytorch_tanh","bos_token_id":1,"eos_token_id":2}"#,
    )
    .unwrap();
    build(cfg, dtype)
}

/// Qwen3: per-head q/k RMSNorm, explicit head_dim, tied embeddings.
fn qwen3(dtype: DType) -> Model {
    let cfg = ModelConfig::from_json(
        r#"{"model_type":"qwen3","vocab_size":23,"hidden_size":8,"intermediate_size":12,
        "num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":6,
        "max_position_embeddings":16,"rms_norm_eps":1e-6,"tie_word_embeddings":true,
        "rope_parameters":{"rope_type":"default","rope_theta":10000.0},
        "bos_token_id":1,"eos_token_id":2}"#,
    )
    .unwrap();
    build(cfg, dtype)
}

fn build(cfg: ModelConfig, dtype: DType) -> Model {
    let p = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    p.add_value_head(&cfg, 3).unwrap();
    let q = Params::empty();
    for (i, (name, v)) in p.vars().into_iter().enumerate() {
        // Bigger weights than the 0.02 init so every path matters; norms
        // near their identity but not at it (Gemma's w − 1 starts at 0).
        let t = v.as_tensor();
        let t = if name.ends_with("norm.weight") {
            let n = t.elem_count();
            let noise: Vec<f32> = (0..n)
                .map(|j| 0.2 * ((j as f32) * 1.7 + i as f32).sin())
                .collect();
            (t + Tensor::from_vec(noise, t.shape(), &Device::Cpu).unwrap()).unwrap()
        } else {
            (t * 20.0).unwrap()
        };
        q.insert(&name, t.to_dtype(dtype).unwrap()).unwrap();
    }
    Model::new(cfg, q).unwrap()
}

fn loss(m: &Model) -> Tensor {
    // Right-padded rows of different lengths, scored from different starts.
    let batch = Scored {
        seqs: vec![vec![1, 5, 7, 9, 11, 2], vec![1, 4, 3]],
        starts: vec![2, 1],
    };
    let (lp, _) = m.token_logprobs(&batch).unwrap();
    let (v, _) = m.token_values(&batch).unwrap();
    let s = m.scores(&batch.seqs).unwrap();
    let w: Vec<f64> = (0..lp.elem_count()).map(|i| 0.3 + 0.1 * i as f64).collect();
    let w = Tensor::from_vec(w, lp.elem_count(), &Device::Cpu)
        .unwrap()
        .to_dtype(lp.dtype())
        .unwrap();
    ((lp * w).unwrap().sum_all().unwrap()
        + (v.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
        + s.sum_all().unwrap())
    .unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn check_finite_differences(m: Model) {
    let grads = loss(&m).backward().unwrap();
    let eps = 1e-6;
    let mut checked = 0;
    for (name, var) in m.params.vars() {
        let g = grads
            .get(&var)
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        // A few coordinates of every parameter tensor.
        for &i in &[0, base.len() / 2, base.len() - 1] {
            let mut plus = base.clone();
            plus[i] += eps;
            var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let lp = scalar(&loss(&m));
            let mut minus = base.clone();
            minus[i] -= eps;
            var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let lm = scalar(&loss(&m));
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let numeric = (lp - lm) / (2.0 * eps);
            let err = (numeric - g[i]).abs() / (1e-6 + numeric.abs().max(g[i].abs()));
            assert!(
                err < 1e-4 || (numeric - g[i]).abs() < 1e-7,
                "{name}[{i}]: autograd {} vs finite difference {numeric}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} coordinates checked");
}

#[test]
fn llama_gradients_match_finite_differences() {
    check_finite_differences(tiny(DType::F64, false));
}

#[test]
fn qwen2_gradients_match_finite_differences() {
    check_finite_differences(tiny(DType::F64, true));
}

#[test]
fn gemma2_gradients_match_finite_differences() {
    check_finite_differences(gemma2(DType::F64));
}

#[test]
fn qwen3_gradients_match_finite_differences() {
    check_finite_differences(qwen3(DType::F64));
}

#[test]
fn fused_f32_path_matches_f64_reference() {
    for (a, b) in [
        (tiny(DType::F32, false), tiny(DType::F64, false)),
        (gemma2(DType::F32), gemma2(DType::F64)),
        (qwen3(DType::F32), qwen3(DType::F64)),
    ] {
        let (a, b) = (loss(&a), loss(&b));
        assert!((scalar(&a) - scalar(&b)).abs() < 1e-3 * scalar(&b).abs().max(1.0));
    }
}

/// The f32 CPU path runs the fused kernels (linear, attention, RoPE,
/// SiLU·up, norms, log-probs) with hand-written backward passes; the f64
/// path runs candle's composite ops, checked above by finite differences.
/// Every parameter's gradient must agree to f32 precision.
#[test]
fn fused_f32_gradients_match_the_f64_reference() {
    for (what, a, b) in [
        ("llama", tiny(DType::F32, false), tiny(DType::F64, false)),
        ("qwen2", tiny(DType::F32, true), tiny(DType::F64, true)),
        ("gemma2", gemma2(DType::F32), gemma2(DType::F64)),
        ("qwen3", qwen3(DType::F32), qwen3(DType::F64)),
    ] {
        let (ga, gb) = (loss(&a).backward().unwrap(), loss(&b).backward().unwrap());
        for ((name, va), (_, vb)) in a.params.vars().into_iter().zip(b.params.vars()) {
            let x = ga
                .get(&va)
                .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
            let y = gb.get(&vb).unwrap();
            let x = x
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let y = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let top = y.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = x
                .iter()
                .zip(&y)
                .fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                err <= 1e-4 * top.max(1e-3),
                "{what} {name}: fused f32 gradient differs by {err} (largest {top})"
            );
        }
    }
}

#[test]
fn checkpoint_round_trip_is_bit_identical() {
    let m = tiny(DType::F32, true);
    let dir = std::env::temp_dir().join(format!("marlhf-ck-{}", std::process::id()));
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let tok =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer.json");
    checkpoint::save_into(&a, &m.config, &m.params, &tok).unwrap();
    let loaded = Checkpoint::load(&a, &Device::Cpu).unwrap();
    loaded.save_into(&b).unwrap();
    for f in [
        checkpoint::CONFIG,
        checkpoint::WEIGHTS,
        checkpoint::TOKENIZER,
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
    for (name, v) in m.params.vars() {
        let w = loaded.model.params.get(&name).unwrap();
        let d = (v.as_tensor() - &w)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(scalar(&d), 0.0, "{name}");
    }
    assert!(loaded.model.v_head.is_some());
    std::fs::remove_dir_all(&dir).ok();
}

/// `m`'s weights as the frozen base of a LoRA adapter on every projection
/// (rank 3), with B random rather than PEFT's zeros so that every factor
/// matters, and a value head in the adapter; in `dtype`.
fn with_adapter(m: Model, rslora: bool, dropout: f64, dtype: DType) -> Model {
    use marlhf_model::lora::{Adapter, LoraSettings, Target};
    let settings = LoraSettings {
        rank: 3,
        alpha: 5.0,
        targets: Target::ALL.to_vec(),
        dropout,
        rslora,
    };
    let adapter = Adapter::new(&settings, &m.config, "base".into(), 9, &Device::Cpu).unwrap();
    for (i, (name, v)) in adapter.params.vars().into_iter().enumerate() {
        let t = v.as_tensor();
        let t = if name.contains("lora_B") {
            let n = t.elem_count();
            let vals: Vec<f32> = (0..n)
                .map(|j| 0.4 * ((j as f32) * 0.9 + i as f32).sin())
                .collect();
            Tensor::from_vec(vals, t.shape(), &Device::Cpu).unwrap()
        } else {
            (t * 3.0).unwrap()
        };
        adapter
            .params
            .insert(&name, t.to_dtype(dtype).unwrap())
            .unwrap();
    }
    adapter
        .set_value_head(&m.params.get(marlhf_model::params::V_HEAD).unwrap())
        .unwrap();
    let head = adapter.params.get(marlhf_model::params::V_HEAD).unwrap();
    adapter
        .params
        .insert(marlhf_model::params::V_HEAD, head.to_dtype(dtype).unwrap())
        .unwrap();
    let base = Params::empty();
    for (name, v) in m.params.vars() {
        base.insert(&name, v.as_tensor().to_dtype(dtype).unwrap())
            .unwrap();
    }
    Model::with_adapter(m.config.clone(), base, dtype, Some(adapter)).unwrap()
}

/// Finite differences over an adapter's factors and value head (the only
/// trained parameters), with the base frozen: no gradient reaches a base
/// weight, not even a zero one.
fn check_adapter_finite_differences(m: Model, dropout_key: Option<u64>) {
    let eval = |m: &Model| {
        m.set_dropout(dropout_key);
        loss(m)
    };
    let grads = eval(&m).backward().unwrap();
    for (name, var) in m.params.vars() {
        assert!(
            grads.get(&var).is_none(),
            "the frozen base weight {name} got a gradient"
        );
    }
    let trained = m.trainable();
    assert!(trained
        .iter()
        .all(|(n, _)| n.contains(".lora_") || n == "v_head.weight"));
    let eps = 1e-6;
    let mut checked = 0;
    for (name, var) in trained {
        let g = grads
            .get(&var)
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for &i in &[0, base.len() / 2, base.len() - 1] {
            let at = |x: f64| {
                let mut p = base.clone();
                p[i] = x;
                var.set(&Tensor::from_vec(p, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                scalar(&eval(&m))
            };
            let numeric = (at(base[i] + eps) - at(base[i] - eps)) / (2.0 * eps);
            at(base[i]);
            let err = (numeric - g[i]).abs() / (1e-6 + numeric.abs().max(g[i].abs()));
            assert!(
                err < 1e-4 || (numeric - g[i]).abs() < 1e-7,
                "{name}[{i}]: autograd {} vs finite difference {numeric}",
                g[i]
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3 * (2 * 7 * 2 + 1),
        "only {checked} coordinates checked"
    );
}

#[test]
fn lora_adapter_gradients_match_finite_differences() {
    check_adapter_finite_differences(
        with_adapter(tiny(DType::F64, false), false, 0.0, DType::F64),
        None,
    );
    check_adapter_finite_differences(
        with_adapter(tiny(DType::F64, true), true, 0.0, DType::F64),
        None,
    );
    check_adapter_finite_differences(
        with_adapter(gemma2(DType::F64), false, 0.0, DType::F64),
        None,
    );
    check_adapter_finite_differences(with_adapter(qwen3(DType::F64), true, 0.0, DType::F64), None);
    // With dropout on (the masks fixed by the key), through the masks.
    check_adapter_finite_differences(
        with_adapter(tiny(DType::F64, false), false, 0.3, DType::F64),
        Some(5),
    );
}

/// The fused f32 path (the base through the fused linear with no weight
/// gradient, the LM head's fused log-probs without the head's gradient)
/// gives the adapter the gradients of the f64 composite path.
#[test]
fn lora_fused_f32_gradients_match_the_f64_reference() {
    for (what, a, b) in [
        ("llama", tiny(DType::F32, false), tiny(DType::F64, false)),
        ("gemma2", gemma2(DType::F32), gemma2(DType::F64)),
    ] {
        let (a, b) = (
            with_adapter(a, false, 0.0, DType::F32),
            with_adapter(b, false, 0.0, DType::F64),
        );
        let (ga, gb) = (loss(&a).backward().unwrap(), loss(&b).backward().unwrap());
        for (name, var) in a.params.vars() {
            assert!(ga.get(&var).is_none(), "{what}: {name} got a gradient");
        }
        for ((name, va), (_, vb)) in a.trainable().into_iter().zip(b.trainable()) {
            let x = ga
                .get(&va)
                .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
            let x = x
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let y = gb
                .get(&vb)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let top = y.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = x
                .iter()
                .zip(&y)
                .fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                err <= 1e-4 * top.max(1e-3),
                "{what} {name}: fused f32 gradient differs by {err} (largest {top})"
            );
        }
    }
}

/// Dropout draws from its key alone: the same key gives the same loss,
/// another key another, and no key (evaluation) the undropped model.
#[test]
fn lora_dropout_is_keyed_and_off_by_default() {
    let m = with_adapter(tiny(DType::F32, false), false, 0.5, DType::F32);
    let at = |key: Option<u64>| {
        m.set_dropout(key);
        let l = scalar(&loss(&m));
        m.set_dropout(None);
        l
    };
    let plain = at(None);
    assert_eq!(at(Some(1)), at(Some(1)));
    assert_ne!(at(Some(1)), at(Some(2)));
    assert_ne!(at(Some(1)), plain);
    assert_eq!(scalar(&loss(&m)), plain);
}
