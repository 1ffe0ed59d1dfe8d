//! The adapters on the real offline data in `../shared/data` (ignored by a
//! plain `cargo test`; `make test` runs them, and fails where it is absent).

use std::path::PathBuf;

use marlhf_data::{prepare, PrepareOptions, Task};

/// The raw data in the workplace's shared directory.
fn raw() -> PathBuf {
    marlhf_testkit::shared("data/hh-rlhf");
    marlhf_testkit::shared("data")
}

#[test]
#[ignore = "needs ../shared"]
fn hh_rlhf_real_rows_add_up() {
    let raw = raw();
    let p = prepare(Task::HhRlhf, &raw, &PrepareOptions::default()).unwrap();
    let r = &p.report;
    assert_eq!(r.raw_rows, 2312 + 2354 + 2749);
    assert_eq!(r.raw_rows, 7415);
    assert_eq!(r.raw_rows, r.kept_rows + r.dropped_total(), "{r:#?}");
    // 4 empty chosen (harmless-base), 4 empty rejected (helpful-base).
    assert_eq!(r.dropped.get("empty chosen completion"), Some(&4));
    assert_eq!(r.dropped.get("empty rejected completion"), Some(&4));
    assert_eq!(r.dropped_total(), 8, "{:?}", r.dropped);
    // Identical chosen/rejected dialogues are kept (34 exact duplicates; the
    // data README says 36).
    assert_eq!(r.chosen_equals_rejected, 34);
    let eval = r.split_rows["eval"] as f64 / r.kept_rows as f64;
    assert!((eval - 0.1).abs() < 0.01, "{eval}");
    let train = (r.kept_rows - r.split_rows["eval"]) as f64;
    for (s, f) in [("sft", 0.2), ("rm", 0.4), ("ppo", 0.4)] {
        let got = r.split_rows[s] as f64 / train;
        assert!((got - f).abs() < 0.01, "{s}: {got}");
    }
    assert_eq!(p.pairs.len() as u64, r.split_rows["rm"]);
    assert_eq!(p.sft.len() as u64, r.split_rows["sft"]);
}

#[test]
#[ignore = "needs ../shared"]
fn tldr_real_rows_add_up() {
    let raw = raw();
    let p = prepare(Task::Tldr, &raw, &PrepareOptions::default()).unwrap();
    let r = &p.report;
    assert_eq!(r.raw_rows, 1945);
    assert_eq!(r.raw_rows, r.kept_rows + r.dropped_total());
    assert_eq!(r.dropped_total(), 0, "{:?}", r.dropped);
    assert!(p
        .prompts
        .iter()
        .chain(&p.eval_prompts)
        .all(|p| p.subreddit.is_some() && p.reference.is_some()));
}

#[test]
#[ignore = "needs ../shared"]
fn apps_real_subset_prepares() {
    let raw = raw();
    let p = prepare(Task::Apps, &raw, &PrepareOptions::default()).unwrap();
    assert_eq!(p.report.raw_rows, 5);
    assert!(p.pairs.is_empty());
    assert_eq!(
        p.report.raw_rows,
        p.report.kept_rows + p.report.dropped_total()
    );
}
