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
    let p = Params::init(&cfg, 3, &Device::Cpu).unwrap();
    p.add_value_head(&cfg, 3).unwrap();
    let q = Params::empty();
    for (name, v) in p.vars() {
        // Bigger weights than the 0.02 init so every path matters.
        let t = (v.as_tensor() * 20.0).unwrap().to_dtype(dtype).unwrap();
        let t = if name.ends_with("norm.weight") {
            (t / 20.0).unwrap()
        } else {
            t
        };
        q.insert(&name, t).unwrap();
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

fn check_finite_differences(bias: bool) {
    let m = tiny(DType::F64, bias);
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
    check_finite_differences(false);
}

#[test]
fn qwen2_gradients_match_finite_differences() {
    check_finite_differences(true);
}

#[test]
fn fused_f32_path_matches_f64_reference() {
    let a = loss(&tiny(DType::F32, false));
    let b = loss(&tiny(DType::F64, false));
    assert!((scalar(&a) - scalar(&b)).abs() < 1e-3 * scalar(&b).abs().max(1.0));
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
