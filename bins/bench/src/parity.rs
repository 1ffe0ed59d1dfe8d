//! `marlhf-bench --parity DIR`: the numbers of the Hugging Face fixtures
//! (`../shared/fixtures/hf-tiny`: one tiny checkpoint per architecture
//! switch, each with transformers' float32 `reference.json`) on a device, in
//! f32, bf16 and f16: teacher-forced next-token log-probabilities against
//! the reference and against the same checkpoint in f32 on the CPU, and the
//! 16 greedy tokens. What `make test` checks on the CPU
//! (crates/model/tests/hf_tiny.rs), for the GPU check to run on a GPU.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use marlhf_model::checkpoint::Use;
use marlhf_model::generate::{generate, SamplingConfig};
use marlhf_model::lm::Scored;
use marlhf_model::Checkpoint;
use serde_json::{json, Value};

/// Largest allowed |Δ log-prob| (nats) per compute dtype, against the
/// reference and against the CPU in f32. f32: the parity `make test` holds
/// on the CPU. bf16 (8 significant bits) and f16 (11): the round-off of
/// the weights and activations in that dtype on these random tiny models,
/// whose log-probs spread over 10 nats; the largest seen on the CPU were
/// 0.082 (bf16) and 0.016 (f16), and the bounds leave room for a GPU's
/// other summation order.
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => 0.15,
        DType::F16 => 0.03,
        _ => 1e-4,
    }
}

struct Reference {
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    greedy: Vec<u32>,
}

fn reference(dir: &Path) -> Result<Reference> {
    let path = dir.join("reference.json");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", path.display()))?;
    let list = |k: &str| -> Result<Vec<f64>> {
        v[k].as_array()
            .with_context(|| format!("{}: no list {k:?}", path.display()))?
            .iter()
            .map(|x| {
                x.as_f64()
                    .with_context(|| format!("{}: {k:?} holds a non-number", path.display()))
            })
            .collect()
    };
    Ok(Reference {
        ids: list("prompt_ids")?.into_iter().map(|x| x as u32).collect(),
        logprobs: list("next_token_logprobs")?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        greedy: list("greedy_16")?.into_iter().map(|x| x as u32).collect(),
    })
}

/// The checkpoint as the stages load a frozen model, computing in `dtype`.
/// `qwen2-bf16`'s references come from a model whose RoPE frequencies
/// transformers had rounded to bf16 (DESIGN.md, "Checkpoints"); they are
/// rounded the same way here, as in crates/model/tests/hf_tiny.rs.
fn load(dir: &Path, dev: &Device, dtype: DType) -> Result<Checkpoint> {
    let mut ck = Checkpoint::load_with(dir, dev, dtype, Use::Inference)?;
    if dir.file_name().is_some_and(|n| n == "qwen2-bf16") {
        let llama = &mut ck.model.llama;
        let rounded: Vec<f32> = llama
            .arch()
            .rope
            .inv_freq(llama.config().head_dim())
            .iter()
            .map(|&f| half::bf16::from_f32(f).to_f32())
            .collect();
        llama.set_rope_frequencies(&rounded)?;
    }
    Ok(ck)
}

fn logprobs(ck: &Checkpoint, ids: &[u32]) -> Result<Vec<f32>> {
    let (lp, _) = ck.model.token_logprobs(&Scored {
        seqs: vec![ids.to_vec()],
        starts: vec![1],
    })?;
    Ok(lp.to_dtype(DType::F32)?.to_vec1()?)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

pub fn run(fixtures: &Path, dev: &Device, json_out: &Path) -> Result<()> {
    let mut dirs: Vec<_> = std::fs::read_dir(fixtures)
        .with_context(|| format!("{}: cannot list the fixtures", fixtures.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "{}: no fixture (a directory with reference.json)",
            fixtures.display()
        );
    }
    println!(
        "{:<24} {:<5} {:>12} {:>12} {:>9} {:>7}  verdict",
        "fixture", "dtype", "Δ reference", "Δ CPU f32", "tolerance", "greedy"
    );
    let mut rows = Vec::new();
    let mut failed = 0;
    for dir in &dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let r = reference(dir)?;
        let cpu = logprobs(&load(dir, &Device::Cpu, DType::F32)?, &r.ids)?;
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let ck = load(dir, dev, dtype)?;
            let lp = logprobs(&ck, &r.ids)?;
            let greedy = generate(
                &ck.model.llama,
                std::slice::from_ref(&r.ids),
                &SamplingConfig::greedy(r.greedy.len(), vec![], 0),
            )?;
            let same_greedy = greedy.tokens[0] == r.greedy;
            let (d_ref, d_cpu, tol) = (
                max_diff(&lp, &r.logprobs),
                max_diff(&lp, &cpu),
                tolerance(dtype),
            );
            // Greedy tokens must match in f32; in half precision a near
            // tie may flip, which the log-prob bound already covers.
            let ok = d_ref <= tol && d_cpu <= tol && (dtype != DType::F32 || same_greedy);
            failed += usize::from(!ok);
            let dt = format!("{dtype:?}").to_lowercase();
            println!(
                "{name:<24} {dt:<5} {d_ref:>12.2e} {d_cpu:>12.2e} {tol:>9} {:>7}  {}",
                if same_greedy { "same" } else { "differ" },
                if ok { "ok" } else { "FAIL" }
            );
            rows.push(json!({
                "fixture": name, "dtype": dt, "max_diff_reference": d_ref,
                "max_diff_cpu_f32": d_cpu, "tolerance": tol,
                "greedy_equal": same_greedy, "ok": ok,
            }));
        }
    }
    let out = json!({ "device": format!("{dev:?}"), "rows": rows, "failed": failed });
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create", parent.display()))?;
    }
    std::fs::write(json_out, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("{}: cannot write", json_out.display()))?;
    if failed > 0 {
        bail!(
            "parity: {failed} of {} rows outside their tolerance (table above)",
            rows.len()
        );
    }
    Ok(())
}
