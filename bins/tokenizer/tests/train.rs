//! The tokenizer on prepared fixture data and, where present, on the real
//! HH-RLHF data; and the binary as a process.

use std::path::{Path, PathBuf};
use std::process::Command;

use marlhf_data::{prepare, write_prepared, PrepareOptions, Task};
use marlhf_testkit::TempDir;
use marlhf_tokenizer::{corpus, to_json, train_tokenizer, SPECIAL_TOKENS};

fn prepared(raw: &Path, task: Task, dir: &Path) -> PathBuf {
    let out = dir.join("data");
    let p = prepare(task, raw, &PrepareOptions::default()).unwrap();
    write_prepared(&out, &p).unwrap();
    out
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/data/tests/fixtures/raw")
}

/// The raw data in the workplace's shared directory.
fn real_raw() -> PathBuf {
    marlhf_testkit::shared("data/hh-rlhf");
    marlhf_testkit::shared("data")
}

fn assert_lossless(tok: &tokenizers::Tokenizer, texts: &[String]) {
    for text in texts {
        let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        let back = tok.decode(&ids, false).unwrap();
        assert_eq!(&back, text);
    }
}

#[test]
fn corpus_is_the_training_text_without_eval_prompts() {
    let dir = TempDir::new("tok-corpus");
    let data = prepared(&fixtures(), Task::HhRlhf, dir.path());
    let texts = corpus(&data).unwrap();
    let sft = marlhf_data::read_sft(&data.join("sft.parquet")).unwrap();
    let pairs = marlhf_data::read_pairs(&data.join("pairs.parquet")).unwrap();
    let prompts = marlhf_data::read_prompts(&data.join("prompts.parquet")).unwrap();
    let eval = marlhf_data::read_prompts(&data.join("eval_prompts.parquet")).unwrap();
    assert_eq!(texts.len(), 2 * sft.len() + 3 * pairs.len() + prompts.len());
    assert!(!eval.is_empty());
    for e in &eval {
        assert!(!texts.contains(&e.prompt));
    }
}

#[test]
fn small_vocab_special_ids_round_trip_and_determinism() {
    let dir = TempDir::new("tok-small");
    let data = prepared(&fixtures(), Task::HhRlhf, dir.path());
    let mut texts = corpus(&data).unwrap();
    texts.push("ünïcödé, 日本語, emoji 🦀 and\ttabs\r\n  spaces  ".to_string());
    let tok = train_tokenizer(&texts, 300, 2).unwrap();
    for (id, t) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.token_to_id(t), Some(id as u32));
        assert_eq!(tok.id_to_token(id as u32).as_deref(), Some(*t));
    }
    let size = tok.get_vocab_size(true);
    assert!(size <= 300 && size > 259, "{size}");
    assert_lossless(&tok, &texts);
    // Special tokens in text are recognised as one token each.
    let ids = tok
        .encode("<|bos|>hi<|eos|>", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!((ids[0], *ids.last().unwrap()), (1, 2));
    assert_eq!(
        to_json(&tok).unwrap(),
        to_json(&train_tokenizer(&texts, 300, 2).unwrap()).unwrap()
    );
    assert!(train_tokenizer(&texts, 100, 2)
        .unwrap_err()
        .to_string()
        .contains("too small"));
}

#[test]
#[ignore = "needs ../shared"]
fn real_hh_rlhf_8k_vocab_round_trips() {
    let raw = real_raw();
    let dir = TempDir::new("tok-real");
    let data = prepared(&raw, Task::HhRlhf, dir.path());
    let texts = corpus(&data).unwrap();
    let tok = train_tokenizer(&texts, 8192, 2).unwrap();
    assert_eq!(tok.get_vocab_size(true), 8192);
    assert_eq!(tok.token_to_id("<|pad|>"), Some(0));
    assert_eq!(tok.token_to_id("<|eos|>"), Some(2));
    assert_lossless(&tok, &texts);
    let eval: Vec<String> = marlhf_data::read_prompts(&data.join("eval_prompts.parquet"))
        .unwrap()
        .into_iter()
        .map(|p| p.prompt)
        .collect();
    assert_lossless(&tok, &eval);
    assert_eq!(
        to_json(&tok).unwrap(),
        to_json(&train_tokenizer(&texts, 8192, 2).unwrap()).unwrap()
    );
}

#[test]
fn binary_writes_tokenizer_json_or_one_error_line() {
    let dir = TempDir::new("tok-bin");
    let data = prepared(&fixtures(), Task::Tldr, dir.path());
    let out = dir.path().join("tok/tokenizer.json");
    let run = |data: &Path| {
        Command::new(env!("CARGO_BIN_EXE_marlhf-tokenizer"))
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(&out)
            .args(["--vocab-size", "400"])
            .output()
            .unwrap()
    };
    let o = run(&data);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("tokens per char"), "{stderr}");
    let first = std::fs::read(&out).unwrap();
    let tok = tokenizers::Tokenizer::from_file(&out).unwrap();
    assert_eq!(tok.token_to_id("<|bos|>"), Some(1));
    assert!(run(&data).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), first, "not deterministic");

    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(data.join("pairs.parquet")).unwrap();
    let o = run(&data);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: {}: file not found",
            data.join("pairs.parquet").display()
        )
    );
    assert!(!out.exists());
    let leftovers = std::fs::read_dir(out.parent().unwrap())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "a temporary was left behind");
}
