//! marlhf-prepare as a process: the happy path on fixtures, and bad inputs
//! giving one `error:` line naming the file, a non-zero exit and no output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use marlhf_testkit::TempDir;

const FILES: [&str; 6] = [
    "sft.parquet",
    "pairs.parquet",
    "prompts.parquet",
    "validation_prompts.parquet",
    "eval_prompts.parquet",
    "prepare_report.json",
];

fn fixtures(root: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/data/tests/fixtures")
        .join(root)
}

fn prepare(task: &str, raw: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_marlhf-prepare"))
        .args(["--task", task, "--raw"])
        .arg(raw)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("RAW")
        .output()
        .unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn happy_path_writes_the_tables_and_a_report_deterministically() {
    let dir = TempDir::new("prepare-ok");
    for task in ["hh-rlhf", "tldr", "webgpt", "apps"] {
        let out = dir.path().join(task);
        let o = prepare(task, &fixtures("raw"), &out, &[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{task}: {stderr}");
        assert!(
            stderr.contains(&format!("── prepare {task} ──")),
            "{stderr}"
        );
        assert!(stderr.contains("split sft"), "{stderr}");
        let mut want: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(listing(&out), want);

        let sft = marlhf_data::read_sft(&out.join("sft.parquet")).unwrap();
        let pairs = marlhf_data::read_pairs(&out.join("pairs.parquet")).unwrap();
        let prompts = marlhf_data::read_prompts(&out.join("prompts.parquet")).unwrap();
        let eval = marlhf_data::read_prompts(&out.join("eval_prompts.parquet")).unwrap();
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("prepare_report.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(report["task"], task);
        assert_eq!(report["outputs"]["sft.parquet"], sft.len() as u64);
        assert_eq!(report["outputs"]["pairs.parquet"], pairs.len() as u64);
        assert_eq!(report["outputs"]["prompts.parquet"], prompts.len() as u64);
        assert_eq!(report["outputs"]["eval_prompts.parquet"], eval.len() as u64);
        assert!(!sft.is_empty() && !prompts.is_empty());

        // Same inputs and seed: byte-identical files.
        let again = dir.path().join(format!("{task}-again"));
        assert!(prepare(task, &fixtures("raw"), &again, &[])
            .status
            .success());
        for f in FILES {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap(),
                std::fs::read(again.join(f)).unwrap(),
                "{task}/{f}"
            );
        }
    }
}

#[test]
fn limit_and_seed_flags_are_used() {
    let dir = TempDir::new("prepare-flags");
    let out = dir.path().join("o");
    let o = prepare(
        "hh-rlhf",
        &fixtures("raw"),
        &out,
        &["--limit", "6", "--seed", "7", "--eval-fraction", "0.2"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("prepare_report.json")).unwrap())
            .unwrap();
    assert_eq!(report["raw_rows"], 6);
    assert_eq!(report["seed"], 7);
    assert_eq!(report["eval_fraction"], 0.2);
}

/// One line on stderr, starting `error: <file>`, non-zero exit, nothing written.
fn assert_fails_cleanly(o: &Output, out: &Path, names: &Path, mentions: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let want = format!("error: {}", names.display());
    assert!(stderr.starts_with(&want), "{stderr}\nwanted prefix: {want}");
    assert!(stderr.contains(mentions), "{stderr}\nwanted: {mentions}");
    assert_eq!(listing(out), Vec::<String>::new(), "output left behind");
}

#[test]
fn bad_inputs_fail_with_one_line_naming_the_file() {
    let dir = TempDir::new("prepare-bad");
    let raw = dir.path().join("raw");
    let out = dir.path().join("out");
    let file = raw.join("hh-rlhf/helpful-base/test.jsonl");

    // missing raw data
    let o = prepare("hh-rlhf", &raw, &out, &[]);
    assert_fails_cleanly(&o, &out, &raw.join("hh-rlhf"), "directory not found");

    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let good = "{\"chosen\":\"\\n\\nHuman: a\\n\\nAssistant: b\",\"rejected\":\"\\n\\nHuman: a\\n\\nAssistant: c\"}\n";
    let cases: [(&[u8], &str); 4] = [
        (b"{not json\n", "line 1: invalid JSON"),
        (
            b"{\"chosen\": \"x\"}\n",
            "line 1, field \"rejected\": missing",
        ),
        (b"", "empty dataset"),
        (
            b"{\"chosen\":\"\xff\",\"rejected\":\"b\"}\n",
            "line 1: invalid UTF-8",
        ),
    ];
    for (bytes, mentions) in cases {
        // A good line first, so the failure is not at the very start.
        let mut content = if bytes.is_empty() {
            Vec::new()
        } else {
            good.as_bytes().to_vec()
        };
        content.extend_from_slice(bytes);
        let mentions =
            mentions.replace("line 1", if bytes.is_empty() { "line 1" } else { "line 2" });
        std::fs::write(&file, &content).unwrap();
        let o = prepare("hh-rlhf", &raw, &out, &[]);
        assert_fails_cleanly(&o, &out, &file, &mentions);
    }
}

#[test]
fn a_failure_keeps_previous_outputs_untouched() {
    let dir = TempDir::new("prepare-keep");
    let out = dir.path().join("out");
    assert!(prepare("tldr", &fixtures("raw"), &out, &[])
        .status
        .success());
    let before = std::fs::read(out.join("sft.parquet")).unwrap();
    let o = prepare("tldr", &dir.path().join("nowhere"), &out, &[]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(out.join("sft.parquet")).unwrap(), before);
    assert_eq!(listing(&out).len(), FILES.len());
}
