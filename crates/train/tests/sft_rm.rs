//! SFT and reward-model training end to end on a tiny model: determinism,
//! exact resumption, learning on a learnable task, and the NaN guard.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use marlhf_data::{read_metrics, write_pairs, write_sft, MetricsRow, PairRow, SftRow};
use marlhf_train::rm::{self, RmOptions};
use marlhf_train::sft::{self, Init, SftOptions};
use marlhf_train::TrainConfig;

fn tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/tokenizer.json")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("marlhf-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// A learnable task: the completion names the colour word in the prompt.
fn sft_rows() -> Vec<SftRow> {
    let colours = ["red", "blue", "big", "small"];
    (0..48)
        .map(|i| {
            let c = colours[i % 4];
            SftRow {
                id: i as u64,
                prompt: format!("the cat sat on a {c} mat"),
                completion: format!("yes {c}"),
            }
        })
        .collect()
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// Metrics without the wall-clock figures (`seconds`, `*_per_second`).
fn deterministic(rows: &[MetricsRow]) -> Vec<MetricsRow> {
    rows.iter()
        .map(|r| MetricsRow {
            values: r
                .values
                .iter()
                .filter(|(k, _)| !k.contains("second"))
                .cloned()
                .collect(),
            ..r.clone()
        })
        .collect()
}

fn train_cfg(out: &Path, steps: u64) -> TrainConfig {
    TrainConfig {
        stage: "test".into(),
        out: out.to_path_buf(),
        lr: 3e-2,
        warmup_ratio: 0.1,
        min_lr_ratio: 0.0,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        batch_size: 4,
        grad_accum: 2,
        epochs: 1.0,
        max_steps: Some(steps),
        seed: 7,
        save_every: 0,
        eval_every: 0,
        resume: false,
        stop_after: None,
    }
}

fn sft_opts(data: &Path, out: &Path, steps: u64) -> SftOptions {
    SftOptions {
        data: data.to_path_buf(),
        init: Init::Scratch {
            tokenizer: tokenizer(),
            hidden: 16,
            layers: 2,
            heads: 2,
            mlp: 32,
            max_positions: 32,
        },
        max_prompt_tokens: 16,
        max_completion_tokens: 8,
        val_fraction: 0.2,
        limit: None,
        device: Device::Cpu,
        dtype: candle_core::DType::F32,
        train: train_cfg(out, steps),
    }
}

#[test]
fn sft_learns_is_deterministic_and_resumes_exactly() {
    let dir = tmp("sft");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();

    let a = dir.join("a");
    let ra = sft::run(&sft_opts(&data, &a, 30)).unwrap();
    let b = dir.join("b");
    sft::run(&sft_opts(&data, &b, 30)).unwrap();
    for f in [
        "model.safetensors",
        "trainer_state.safetensors",
        "config.json",
        "tokenizer.json",
    ] {
        assert!(same_bytes(&a.join(f), &b.join(f)), "{f} differs");
    }
    // Metrics agree exactly except the wall-clock columns.
    assert_eq!(
        deterministic(&read_metrics(&a.join("metrics.parquet")).unwrap()),
        deterministic(&read_metrics(&b.join("metrics.parquet")).unwrap())
    );

    // The task is learnable: held-out loss falls far below uniform (ln 23).
    let metrics = read_metrics(&a.join("metrics.parquet")).unwrap();
    assert_eq!(metrics.len(), 30);
    let first = metrics[0].get("loss").unwrap();
    let val = ra
        .outcome
        .eval
        .iter()
        .find(|(k, _)| k == "val_loss")
        .unwrap()
        .1;
    assert!(first > 2.5, "initial loss {first}");
    assert!(val < 1.0, "held-out loss after training {val}");

    // Interrupted after 12 steps (checkpoint every 6), then resumed.
    let c = dir.join("c");
    let mut o = sft_opts(&data, &c, 30);
    o.train.save_every = 6;
    o.train.stop_after = Some(12);
    sft::run(&o).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 12);
    assert_eq!(state["finished"], false);
    o.train.stop_after = None;
    o.train.resume = true;
    let r = sft::run(&o).unwrap();
    assert_eq!(r.outcome.resumed_from, Some(12));
    assert!(
        same_bytes(&a.join("model.safetensors"), &c.join("model.safetensors")),
        "resumed run differs from the uninterrupted one"
    );
    assert_eq!(
        deterministic(&read_metrics(&c.join("metrics.parquet")).unwrap()),
        deterministic(&metrics)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn nan_weights_stop_training_without_writing_a_checkpoint() {
    let dir = tmp("nan");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();
    let good = dir.join("good");
    sft::run(&sft_opts(&data, &good, 2)).unwrap();
    // Poison one weight of the good checkpoint and train from it.
    let ck = marlhf_model::Checkpoint::load(&good, &Device::Cpu).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let w = ck.model.params.get(name).unwrap();
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    ck.model
        .params
        .insert(name, Tensor::from_vec(v, w.shape(), &Device::Cpu).unwrap())
        .unwrap();
    let poisoned = dir.join("poisoned");
    std::fs::create_dir_all(&poisoned).unwrap();
    ck.save_into(&poisoned).unwrap();
    let out = dir.join("out");
    let mut o = sft_opts(&data, &out, 4);
    o.init = Init::Checkpoint(poisoned);
    let err = sft::run(&o)
        .err()
        .expect("training on NaN weights must fail")
        .to_string();
    assert!(err.contains("loss is NaN at step 1"), "{err}");
    assert!(!out.exists(), "no checkpoint may be written");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reward_model_learns_preferences_and_skips_identical_pairs() {
    let dir = tmp("rm");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();
    let sft_dir = dir.join("sft");
    sft::run(&sft_opts(&data, &sft_dir, 4)).unwrap();
    // Chosen answers say "yes", rejected ones "no": learnable from the last token.
    let mut pairs: Vec<PairRow> = (0..40)
        .map(|i| PairRow {
            id: i,
            prompt: format!(
                "the dog ran {}",
                ["far", "big", "red", "then"][i as usize % 4]
            ),
            chosen: " yes".into(),
            rejected: " no".into(),
        })
        .collect();
    pairs.push(PairRow {
        id: 99,
        prompt: "the cat".into(),
        chosen: " yes".into(),
        rejected: " yes".into(),
    });
    let pairs_path = dir.join("pairs.parquet");
    write_pairs(&pairs_path, &pairs).unwrap();
    let out = dir.join("rm");
    let mut cfg = train_cfg(&out, 25);
    cfg.lr = 1e-2;
    let r = rm::run(&RmOptions {
        data: pairs_path,
        init: sft_dir,
        max_prompt_tokens: 16,
        max_completion_tokens: 8,
        val_fraction: 0.25,
        limit: None,
        device: Device::Cpu,
        dtype: candle_core::DType::F32,
        train: cfg,
    })
    .unwrap();
    assert_eq!(r.identical_pairs, 1);
    assert_eq!(r.train_pairs + r.val_pairs, 40);
    let acc = r
        .outcome
        .eval
        .iter()
        .find(|(k, _)| k == "val_accuracy")
        .unwrap()
        .1;
    assert_eq!(acc, 1.0, "held-out pairwise accuracy");
    let ck = marlhf_model::Checkpoint::load(&out, &Device::Cpu).unwrap();
    assert!(ck.model.v_head.is_some());
    std::fs::remove_dir_all(&dir).ok();
}
