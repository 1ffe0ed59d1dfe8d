//! The CPU decode path of `generate` against the candle reference loop
//! (`generate_reference`): the same tokens, the same log-probabilities to
//! the bit and the same stopping, for every architecture switch (the nine
//! hf-tiny checkpoints), for batches with left padding and rows that stop
//! early, greedy and sampled, and for the real stories260K model.

use candle_core::{DType, Device};
use marlhf_model::checkpoint::Use;
use marlhf_model::decode;
use marlhf_model::generate::{generate, generate_reference, Generated, SamplingConfig};
use marlhf_model::llama::Llama;
use marlhf_model::{llama2c, Checkpoint, Model, ModelConfig, Params};

use marlhf_testkit::shared;

fn bits(g: &Generated) -> (Vec<Vec<u32>>, Vec<Vec<u32>>, Vec<bool>) {
    let lp = g
        .logprobs
        .iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect();
    (g.tokens.clone(), lp, g.finished.clone())
}

/// Both paths on the same input; returns the output for further checks.
fn same(what: &str, model: &Llama, prompts: &[Vec<u32>], cfg: &SamplingConfig) -> Generated {
    let fast = generate(model, prompts, cfg).unwrap();
    let reference = generate_reference(model, prompts, cfg).unwrap();
    assert_eq!(bits(&fast), bits(&reference), "{what}: decode path differs");
    fast
}

fn sampled(max_new: usize, eos: Vec<u32>, seed: u64) -> SamplingConfig {
    SamplingConfig {
        max_new_tokens: max_new,
        temperature: 0.8,
        top_k: Some(50),
        top_p: Some(0.95),
        seed,
        eos,
        pad: 0,
    }
}

#[test]
#[ignore = "needs ../shared"]
fn every_family_decodes_bit_for_bit_like_the_reference() {
    let fixtures = [
        "llama",
        "llama3-gqa-tied",
        "llama3.1-rope-scaling",
        "qwen2",
        "qwen2-bf16",
        "qwen3",
        "mistral-sharded",
        "gemma",
        "gemma2",
    ];
    let mut fast_paths = 0;
    for name in fixtures {
        let dir = shared("fixtures/hf-tiny").join(name);
        let ck = Checkpoint::load(&dir, &Device::Cpu).unwrap();
        let llama = &ck.model.llama;
        fast_paths += usize::from(decode::supported(llama));
        let ids = ck
            .tokenizer
            .encode("Once upon a time there was a tiny model")
            .unwrap();
        assert!(ids.len() >= 8, "{name}: prompt too short");
        // Three rows of different lengths: left padding of 0, 3 and 6.
        let prompts = vec![
            ids.clone(),
            ids[..ids.len() - 3].to_vec(),
            ids[..2].to_vec(),
        ];
        let greedy = SamplingConfig::greedy(12, vec![], 0);
        let out = same(&format!("{name} greedy"), llama, &prompts, &greedy);
        // An EOS the first row emits early, so rows stop at different steps.
        let eos = vec![out.tokens[0][3]];
        same(
            &format!("{name} greedy with EOS"),
            llama,
            &prompts,
            &SamplingConfig::greedy(12, eos.clone(), 0),
        );
        for seed in [1, 2] {
            same(
                &format!("{name} sampled, seed {seed}"),
                llama,
                &prompts,
                &sampled(12, eos.clone(), seed),
            );
        }
    }
    assert_eq!(
        fast_paths,
        fixtures.len(),
        "every f32 model takes the decode path"
    );
}

/// A model computing in bf16 is not for the decode path: `generate` falls
/// back to the reference loop.
#[test]
#[ignore = "needs ../shared"]
fn bf16_models_take_the_reference_loop() {
    let dir = shared("fixtures/hf-tiny/qwen2-bf16");
    let ck = Checkpoint::load_with(&dir, &Device::Cpu, DType::BF16, Use::Inference).unwrap();
    assert!(!decode::supported(&ck.model.llama));
    let ids = ck.tokenizer.encode("Once upon a time").unwrap();
    same("bf16", &ck.model.llama, &[ids], &sampled(8, vec![], 3));
}

/// A random model of the benchmark's shape, scaled down, with grouped-query
/// attention: batches of 1 and 16, prompts of 1 to 16 tokens, an EOS set
/// wide enough that most rows stop before the budget.
#[test]
fn batched_rollouts_decode_bit_for_bit_like_the_reference() {
    let mut cfg = ModelConfig::tiny_llama(512, 64, 2, 4, 172);
    cfg.num_key_value_heads = Some(2);
    cfg.max_position_embeddings = 128;
    let model = Model::new(cfg.clone(), Params::init(&cfg, 11, &Device::Cpu).unwrap()).unwrap();
    assert!(decode::supported(&model.llama));
    let prompts: Vec<Vec<u32>> = (0..16)
        .map(|r| {
            (0..1 + r)
                .map(|i| (3 + 31 * r + 7 * i) as u32 % 512)
                .collect()
        })
        .collect();
    let eos: Vec<u32> = (100..130).collect();
    let out = same(
        "batch 16",
        &model.llama,
        &prompts,
        &sampled(48, eos.clone(), 7),
    );
    let stopped = out.finished.iter().filter(|&&f| f).count();
    assert!(
        (4..16).contains(&stopped),
        "{stopped} of 16 rows stopped: the EOS set should stop some, not all"
    );
    same(
        "batch 1",
        &model.llama,
        &prompts[5..6],
        &sampled(48, vec![], 8),
    );
    same(
        "batch 16 greedy",
        &model.llama,
        &prompts,
        &SamplingConfig::greedy(20, eos, 0),
    );
}

#[test]
#[ignore = "needs ../shared"]
fn stories260k_samples_bit_for_bit_like_the_reference() {
    let dir = marlhf_testkit::stories260k();
    let (cfg, params) = llama2c::import_model(&dir.join("stories260K.bin"), &Device::Cpu).unwrap();
    let model = Model::new(cfg, params).unwrap();
    let prompts = vec![vec![1], vec![1, 403, 407], vec![1, 403]];
    let out = same(
        "stories260K",
        &model.llama,
        &prompts,
        &sampled(60, vec![2], 5),
    );
    assert!(out.tokens.iter().all(|t| !t.is_empty()));
}
