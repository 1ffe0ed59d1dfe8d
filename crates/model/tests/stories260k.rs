//! The real pretrained stories260K (llama2.c format) imported into the
//! Hugging Face layout must continue fluently, with and without the cache.

use candle_core::Device;
use marlhf_model::generate::{generate, greedy_uncached, SamplingConfig};
use marlhf_model::{llama2c, Model, Tokenizer};

fn load() -> (Model, Tokenizer) {
    let dir = marlhf_testkit::stories260k();
    let (cfg, params) = llama2c::import_model(&dir.join("stories260K.bin"), &Device::Cpu).unwrap();
    let json = llama2c::import_tokenizer(&dir.join("tok512.bin"), cfg.vocab_size).unwrap();
    // Tests run in parallel: each call needs its own file.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = std::env::temp_dir().join(format!("marlhf-tok512-{}-{n}.json", std::process::id()));
    std::fs::write(&tmp, json).unwrap();
    let tok = Tokenizer::load(&tmp, Some(1), Some(2), Some(0)).unwrap();
    std::fs::remove_file(&tmp).ok();
    (Model::new(cfg, params).unwrap(), tok)
}

#[test]
#[ignore = "needs ../shared"]
fn greedy_continuation_from_bos_is_fluent_and_cache_exact() {
    let (model, tok) = load();
    let cfg = SamplingConfig::greedy(30, vec![2], 0);
    let out = generate(&model.llama, &[vec![1]], &cfg).unwrap();
    let text = tok.decode(&out.tokens[0]).unwrap();
    // Verified by reading: fluent TinyStories English.
    assert_eq!(
        out.tokens[0],
        vec![
            403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401,
            396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433
        ]
    );
    assert_eq!(
        text,
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park"
    );
    assert!(!out.finished[0]);
    // The converted SentencePiece tokenizer encodes the text back to the
    // same pieces the model produced.
    assert_eq!(tok.encode(&text).unwrap(), out.tokens[0]);
    let uncached = greedy_uncached(&model.llama, &[1], out.tokens[0].len()).unwrap();
    assert_eq!(out.tokens[0], uncached);
}

#[test]
#[ignore = "needs ../shared"]
fn left_padded_batch_matches_each_row_alone() {
    let (model, tok) = load();
    let prompts: Vec<Vec<u32>> = ["Tom had a red ball", "One day"]
        .iter()
        .map(|t| {
            let mut ids = vec![1];
            ids.extend(tok.encode(t).unwrap());
            ids
        })
        .collect();
    let cfg = SamplingConfig::greedy(12, vec![2], 0);
    let batched = generate(&model.llama, &prompts, &cfg).unwrap();
    for (r, p) in prompts.iter().enumerate() {
        let alone = generate(&model.llama, std::slice::from_ref(p), &cfg).unwrap();
        assert_eq!(batched.tokens[r], alone.tokens[0], "row {r}");
        for (a, b) in batched.logprobs[r].iter().zip(&alone.logprobs[0]) {
            assert!((a - b).abs() < 1e-4, "row {r}: logprob {a} vs {b}");
        }
    }
}

#[test]
#[ignore = "needs ../shared"]
fn sampling_is_seeded_and_respects_top_k() {
    let (model, _tok) = load();
    let mut cfg = SamplingConfig::greedy(20, vec![2], 0);
    cfg.temperature = 0.8;
    cfg.top_k = Some(1);
    // top-k 1 at any temperature is greedy.
    let greedy = generate(
        &model.llama,
        &[vec![1]],
        &SamplingConfig::greedy(20, vec![2], 0),
    )
    .unwrap();
    assert_eq!(
        generate(&model.llama, &[vec![1]], &cfg).unwrap().tokens,
        greedy.tokens
    );
    cfg.top_k = Some(50);
    cfg.top_p = Some(0.9);
    cfg.seed = 7;
    let a = generate(&model.llama, &[vec![1], vec![1]], &cfg).unwrap();
    let b = generate(&model.llama, &[vec![1], vec![1]], &cfg).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_ne!(a.tokens[0], a.tokens[1], "rows draw from their own streams");
    cfg.seed = 8;
    assert_ne!(
        generate(&model.llama, &[vec![1]], &cfg).unwrap().tokens[0],
        a.tokens[0]
    );
}
