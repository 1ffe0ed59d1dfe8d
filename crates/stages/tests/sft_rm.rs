//! SFT and reward-model training end to end on a tiny model: determinism,
//! exact resumption, learning on a learnable task, and the NaN guard.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use marlhf_data::{read_metrics, write_pairs, write_sft, MetricsRow, PairRow, SftRow};
use marlhf_stages::progress::Silent;
use marlhf_stages::rm::{self, RmOptions};
use marlhf_stages::sft::{self, Init, SftOptions};
use marlhf_stages::TrainConfig;

fn tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/tokenizer.json")
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("marlhf-stages-{tag}-{}", std::process::id()));
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
        override_settings: false,
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
        lora: None,
        train: train_cfg(out, steps),
    }
}

#[test]
fn sft_learns_is_deterministic_and_resumes_exactly() {
    let dir = tmp("sft");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();

    let a = dir.join("a");
    let ra = sft::run(&sft_opts(&data, &a, 30), &Silent).unwrap();
    let b = dir.join("b");
    sft::run(&sft_opts(&data, &b, 30), &Silent).unwrap();
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
    sft::run(&o, &Silent).unwrap();
    // The pause leaves its checkpoint beside, not as, the run's result.
    assert!(!c.join("model.safetensors").exists());
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(c.join("checkpoint-12/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 12);
    assert_eq!(state["finished"], false);
    o.train.stop_after = None;
    o.train.resume = true;
    let r = sft::run(&o, &Silent).unwrap();
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
fn nan_weights_are_refused_at_load_without_writing_a_checkpoint() {
    let dir = tmp("nan");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();
    let good = dir.join("good");
    sft::run(&sft_opts(&data, &good, 2), &Silent).unwrap();
    // Poison one weight of the good checkpoint (safetensors written by hand:
    // marlhf itself never saves a non-finite value) and train from it.
    let poisoned = dir.join("poisoned");
    std::fs::create_dir_all(&poisoned).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(good.join(f), poisoned.join(f)).unwrap();
    }
    let mut tensors =
        candle_core::safetensors::load(good.join("model.safetensors"), &Device::Cpu).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let w = &tensors[name];
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    let shape = w.shape().clone();
    tensors.insert(
        name.to_string(),
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, poisoned.join("model.safetensors")).unwrap();
    let out = dir.join("out");
    let mut o = sft_opts(&data, &out, 4);
    o.init = Init::Checkpoint(poisoned);
    let err = format!(
        "{:#}",
        sft::run(&o, &Silent)
            .err()
            .expect("training on NaN weights must fail")
    );
    assert!(
        err.contains("model.safetensors")
            && err.contains(name)
            && err.contains("1 of 512 values are NaN"),
        "{err}"
    );
    assert!(!out.exists(), "no checkpoint may be written");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reward_model_learns_preferences_and_skips_identical_pairs() {
    let dir = tmp("rm");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();
    let sft_dir = dir.join("sft");
    sft::run(&sft_opts(&data, &sft_dir, 4), &Silent).unwrap();
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
    let r = rm::run(
        &RmOptions {
            data: pairs_path,
            init: sft_dir,
            max_prompt_tokens: 16,
            max_completion_tokens: 8,
            val_fraction: 0.25,
            limit: None,
            device: Device::Cpu,
            dtype: candle_core::DType::F32,
            lora: None,
            train: cfg,
        },
        &Silent,
    )
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

// ---- issue 13: interrupted runs, non-finite values, resume settings ----

/// Issue 13, item 4: a paused or killed run leaves a checkpoint that no
/// stage takes for a finished one.
#[test]
fn an_unfinished_run_is_not_a_checkpoint() {
    let dir = tmp("partial");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();
    let out = dir.join("sft");
    let mut o = sft_opts(&data, &out, 30);
    o.train.save_every = 5;
    o.train.stop_after = Some(10);
    sft::run(&o, &Silent).unwrap();
    // What make and every stage look for is not there.
    assert!(!out.join("model.safetensors").exists());
    let err = marlhf_model::Checkpoint::load(&out, &Device::Cpu)
        .err()
        .expect("an unfinished run must not load")
        .to_string();
    assert!(
        err.contains("unfinished") && err.contains("--allow-partial"),
        "{err}"
    );
    let partial = out.join("checkpoint-10");
    let err = marlhf_model::Checkpoint::load(&partial, &Device::Cpu)
        .err()
        .expect("a partial checkpoint must not load by default")
        .to_string();
    assert!(
        err.contains("step 10 of 30") && err.contains("--allow-partial"),
        "{err}"
    );
    marlhf_model::Checkpoint::load_with_partial(
        &partial,
        &Device::Cpu,
        candle_core::DType::F32,
        marlhf_model::checkpoint::Use::Training,
        marlhf_model::checkpoint::Partial::Allow,
    )
    .unwrap();
    let pairs = dir.join("pairs.parquet");
    write_pairs(
        &pairs,
        &[PairRow {
            id: 1,
            prompt: "the cat".into(),
            chosen: " yes".into(),
            rejected: " no".into(),
        }],
    )
    .unwrap();
    for init in [&out, &partial] {
        let err = rm::run(
            &RmOptions {
                data: pairs.clone(),
                init: init.clone(),
                max_prompt_tokens: 16,
                max_completion_tokens: 8,
                val_fraction: 0.0,
                limit: None,
                device: Device::Cpu,
                dtype: candle_core::DType::F32,
                lora: None,
                train: train_cfg(&dir.join("rm"), 2),
            },
            &Silent,
        )
        .err()
        .expect("the reward model must refuse an unfinished SFT run")
        .to_string();
        assert!(err.contains("--allow-partial"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 13, item 5: a NaN learning rate turns the weights to NaN after
/// the first step; no checkpoint with a non-finite value is ever written.
#[test]
fn non_finite_weights_are_never_saved() {
    let dir = tmp("nan-lr");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();
    let out = dir.join("out");
    let mut o = sft_opts(&data, &out, 5);
    o.train.lr = f64::NAN;
    o.train.save_every = 1;
    let err = sft::run(&o, &Silent).err().expect("training must stop");
    // The stop, then its cause.
    let err = format!("{err:#}");
    assert!(
        err.contains("stopped") && err.contains("not finite"),
        "{err}"
    );
    // Whatever exists is finite.
    let mut checked = 0;
    for entry in marlhf_testkit::files_under(&out) {
        if entry.extension().is_some_and(|e| e == "safetensors") {
            let tensors = candle_core::safetensors::load(&entry, &Device::Cpu).unwrap();
            for (name, t) in tensors {
                let v = t
                    .flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap();
                let v: Vec<f32> = v.to_vec1().unwrap();
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{}: {name}",
                    entry.display()
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked, 0,
        "nothing could be saved: the first step already poisons the weights"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Issue 13, item 6: a resume continues the run that was saved, or says why
/// it cannot.
#[test]
fn resume_refuses_changed_settings_and_a_step_limit_behind_it() {
    let dir = tmp("resume-settings");
    let data = dir.join("sft.parquet");
    write_sft(&data, &sft_rows()).unwrap();
    let out = dir.join("out");
    let mut o = sft_opts(&data, &out, 12);
    o.train.save_every = 3;
    o.train.stop_after = Some(6);
    sft::run(&o, &Silent).unwrap();
    o.train.stop_after = None;
    o.train.resume = true;

    let mut changed = sft_opts(&data, &out, 12);
    changed.train.save_every = 3;
    changed.train.resume = true;
    changed.train.seed = 8;
    changed.train.lr = 1e-3;
    let err = sft::run(&changed, &Silent)
        .err()
        .expect("changed seed")
        .to_string();
    assert!(
        err.contains("seed 8 (saved 7)") && err.contains("lr 0.001 (saved 0.03)"),
        "{err}"
    );
    let mut changed = sft_opts(&data, &out, 12);
    changed.train.resume = true;
    changed.train.batch_size = 3;
    let err = sft::run(&changed, &Silent)
        .err()
        .expect("changed batch size")
        .to_string();
    assert!(err.contains("batch_size 3 (saved 4)"), "{err}");
    let mut changed = sft_opts(&data, &out, 12);
    changed.val_fraction = 0.5;
    changed.train.resume = true;
    let err = sft::run(&changed, &Silent)
        .err()
        .expect("changed split")
        .to_string();
    assert!(err.contains("val_fraction"), "{err}");

    let mut behind = sft_opts(&data, &out, 4);
    behind.train.resume = true;
    let err = sft::run(&behind, &Silent)
        .err()
        .expect("max steps behind")
        .to_string();
    assert!(
        err.contains("--max-steps 4") && err.contains("step 6"),
        "{err}"
    );
    // Nothing of that touched the saved run: it still resumes exactly.
    let r = sft::run(&o, &Silent).unwrap();
    assert_eq!(r.outcome.resumed_from, Some(6));
    std::fs::remove_dir_all(&dir).ok();
}
