//! The eval stage's generation step as a library call: several samples per
//! prompt (for pass@k), greedy decoding, and refusing policies whose
//! tokenizer the reward model cannot read.

use candle_core::Device;
use marlhf_data::read_responses;
use marlhf_model::checkpoint::CONFIG;
use marlhf_stages::evaluate::generating::{generate_responses, GenerateConfig};
use marlhf_stages::evaluate::reporting::{assemble_report, ReportConfig};
use marlhf_stages::progress::Silent;
use marlhf_testkit::eval::EvalRun;

fn config(run: &EvalRun, name: &str) -> GenerateConfig {
    GenerateConfig {
        policies: vec![("sft".into(), run.sft())],
        prompts: run.prompts(),
        reward_model: Some(run.rm()),
        out: run.root().join(name),
        n: 2,
        samples_per_prompt: 3,
        seed: 1234,
        max_prompt_tokens: 64,
        max_new_tokens: 6,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        batch_size: 4,
        device: Device::Cpu,
        dtype: candle_core::DType::F32,
        gold_model: None,
    }
}

#[test]
#[ignore = "needs ../shared"]
fn samples_per_prompt_greedy_and_sampled() {
    let run = EvalRun::new("eval-gen", 4).unwrap();
    let greedy = config(&run, "greedy.parquet");
    let summary = generate_responses(&greedy, &Silent).unwrap();
    assert_eq!(summary.prompts_used, 2);
    assert_eq!(summary.prompts_in_file, 4);
    assert_eq!(summary.policies[0].responses, 6);
    let rows = read_responses(&greedy.out).unwrap();
    assert_eq!(rows.len(), 6);
    let samples: Vec<u32> = rows.iter().map(|r| r.sample).collect();
    assert_eq!(samples, vec![0, 1, 2, 0, 1, 2]);
    for group in rows.chunks(3) {
        assert!(group.iter().all(|r| r.prompt_id == group[0].prompt_id));
        // Greedy decoding ignores the seed: every sample is the same.
        assert!(group
            .iter()
            .all(|r| r.response_tokens == group[0].response_tokens && r.score == group[0].score));
    }
    assert_ne!(rows[0].prompt_id, rows[3].prompt_id);
    // The mean and standard error in the report are those of the scores.
    let scores: Vec<f64> = rows.iter().map(|r| r.score as f64).collect();
    let mean = scores.iter().sum::<f64>() / 6.0;
    assert!((summary.policies[0].score.mean - mean).abs() < 1e-9);

    let sampled = GenerateConfig {
        temperature: 1.0,
        out: run.root().join("sampled.parquet"),
        ..config(&run, "")
    };
    generate_responses(&sampled, &Silent).unwrap();
    let rows = read_responses(&sampled.out).unwrap();
    let distinct: std::collections::BTreeSet<&Vec<u32>> =
        rows.iter().map(|r| &r.response_tokens).collect();
    assert!(
        distinct.len() > 2,
        "sampling at temperature 1 varies: {distinct:?}"
    );

    // Without a reward model (APPS) the responses are the same, unscored,
    // and the report has no score section.
    let unscored = GenerateConfig {
        reward_model: None,
        out: run.root().join("unscored.parquet"),
        ..config(&run, "")
    };
    generate_responses(&unscored, &Silent).unwrap();
    let plain = read_responses(&unscored.out).unwrap();
    let scored = read_responses(&greedy.out).unwrap();
    for (a, b) in plain.iter().zip(&scored) {
        assert!(a.score.is_nan());
        assert_eq!(a.response_tokens, b.response_tokens);
    }
    let out = assemble_report(&ReportConfig {
        responses: Some(unscored.out.clone()),
        judgements: None,
        passk: None,
        ks: vec![1],
        rm_metrics: None,
        ppo_metrics: Vec::new(),
        curve_metric: "score_mean".into(),
        task: "apps".into(),
        title: "t".into(),
        out: run.root().join("r/report.md"),
        notes: Vec::new(),
    })
    .unwrap();
    let md = std::fs::read_to_string(&out.report).unwrap();
    assert!(!md.contains("Reward-model scores"), "{md}");
    assert!(md.contains("6 responses to 2 prompts"), "{md}");
    assert!(out.images.is_empty());
}

#[test]
#[ignore = "needs ../shared"]
fn a_policy_with_another_eos_is_refused_before_generating() {
    let run = EvalRun::new("eval-gen-vocab", 2).unwrap();
    let odd = run.root().join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    for f in std::fs::read_dir(run.ppo()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, odd.join(f.file_name().unwrap())).unwrap();
    }
    let cfg_path = odd.join(CONFIG);
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["eos_token_id"] = 3.into();
    std::fs::write(&cfg_path, json.to_string()).unwrap();
    let cfg = GenerateConfig {
        policies: vec![("sft".into(), run.sft()), ("odd".into(), odd.clone())],
        ..config(&run, "out.parquet")
    };
    let err = format!("{:#}", generate_responses(&cfg, &Silent).unwrap_err());
    assert_eq!(
        err,
        format!(
            "{}: policy \"odd\" has a tokenizer of 512 tokens with EOS 3, but the reward model {} has 512 tokens with EOS 1; the reward model scores the policies' token ids, so they must share one tokenizer",
            odd.display(),
            run.rm().display()
        )
    );
    assert!(!cfg.out.exists());
}
