use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("marlhf-eval-report-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn sample_input() -> ReportInput {
    // Deterministic pseudo-scores: two overlapping bumps.
    let scores = |shift: f64| -> Vec<f64> {
        (0..200)
            .map(|i| {
                shift + ((i * 37 % 101) as f64 / 101.0 - 0.5) * 2.0 + ((i * 13 % 7) as f64) * 0.1
            })
            .collect()
    };
    ReportInput {
        title: "Evaluation".into(),
        task: "tldr".into(),
        policies: vec![
            PolicyScores {
                policy: "PPO".into(),
                scores: scores(0.0),
            },
            PolicyScores {
                policy: "MA-PPO (fixed 5)".into(),
                scores: scores(0.6),
            },
        ],
        pairwise: vec![PairwiseRow {
            policy_a: "MA-PPO (fixed 5)".into(),
            policy_b: "PPO".into(),
            judge: "gpt-4o".into(),
            rate: WinRate {
                win: 6,
                tie: 2,
                lose: 1,
                unparseable: 1,
                n: 10,
                error: 0,
            },
        }],
        curves: vec![
            RewardCurve {
                run: "PPO".into(),
                points: (0..12)
                    .map(|i| (i as f64, (i as f64).sqrt() * 0.4 - 1.0))
                    .collect(),
            },
            RewardCurve {
                run: "MA-PPO (fixed 5)".into(),
                points: (0..12)
                    .map(|i| (i as f64, (i as f64).sqrt() * 0.6 - 1.0))
                    .collect(),
            },
        ],
        pass_at_k: vec![],
        notes: vec!["seed 1234".into()],
    }
}

#[test]
fn standard_error_by_hand() {
    // mean 2.5, sample variance 5/3, s.e. = sqrt(5/3 / 4).
    let se = stderr_of_mean(&[1.0, 2.0, 3.0, 4.0]);
    assert!((se - (5.0f64 / 12.0).sqrt()).abs() < 1e-15, "{se}");
    assert_eq!(stderr_of_mean(&[2.0, 2.0, 2.0]), 0.0);
    assert!(stderr_of_mean(&[5.0]).is_nan());
    assert!(mean(&[]).is_nan());
    let m = mean_se(&[1.0, 3.0]);
    assert_eq!((m.n, m.mean, m.se), (2, 2.0, 1.0));
}

#[test]
fn tables_by_hand() {
    let scores = scores_table(&[
        PolicyScores {
            policy: "SFT".into(),
            scores: vec![1.0, 2.0, 3.0, 4.0],
        },
        PolicyScores {
            policy: "a|b".into(),
            scores: vec![0.5],
        },
    ]);
    assert_eq!(
        scores,
        "| policy | n | mean RM score ± s.e. |\n| --- | ---: | ---: |\n| SFT | 4 | 2.500 ± 0.645 |\n| a\\|b | 1 | 0.500 ± – |\n"
    );
    let pairwise = pairwise_table(&sample_input().pairwise);
    assert!(
        pairwise.ends_with("| MA-PPO (fixed 5) vs PPO | gpt-4o | 10 | 6 | 2 | 1 | 1 | 60.0% |\n"),
        "{pairwise}"
    );
    let pass = pass_at_k_table(&[PassAtKRow {
        policy: "PPO".into(),
        k: 1,
        problems: 5,
        pass_at_k: 0.4,
    }]);
    assert!(pass.ends_with("| PPO | 1 | 5 | 40.00% |\n"), "{pass}");
}

#[test]
fn report_embeds_plots_and_is_reproducible() {
    let input = sample_input();
    let first = temp_dir("a");
    let second = temp_dir("b");
    let path = write_report(&first, &input).unwrap();
    assert_eq!(path, first.join(REPORT_FILE));
    write_report(&second, &input).unwrap();

    let md = fs::read_to_string(&path).unwrap();
    assert!(md.starts_with("# Evaluation\n"));
    assert!(md.contains(&format!("]({REWARD_CURVES_FILE})")));
    assert!(md.contains(&format!("]({SCORES_FILE})")));
    assert!(md.contains("| MA-PPO (fixed 5) vs PPO |"));
    assert!(md.contains("- seed 1234"));
    assert!(!md.contains("pass@k"));

    for file in [REPORT_FILE, REWARD_CURVES_FILE, SCORES_FILE] {
        let a = fs::read(first.join(file)).unwrap();
        let b = fs::read(second.join(file)).unwrap();
        assert!(a == b, "{file} differs between two identical runs");
    }
    let png = fs::read(first.join(SCORES_FILE)).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(&png[16..24], &[0, 0, 3, 132, 0, 0, 2, 28]); // 900 x 540
                                                            // Nothing temporary is left behind.
    let names: Vec<String> = fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // Different data, different picture.
    let mut changed = input.clone();
    changed.curves[0].points[3].1 += 0.5;
    let a = reward_curves_png(&input.curves, "t").unwrap();
    let b = reward_curves_png(&changed.curves, "t").unwrap();
    assert_ne!(a, b);
    let _ = fs::remove_dir_all(&first);
    let _ = fs::remove_dir_all(&second);
}

#[test]
fn sections_without_data_are_left_out() {
    let dir = temp_dir("empty");
    let input = ReportInput {
        title: "Only pass@k".into(),
        pass_at_k: vec![PassAtKRow {
            policy: "SFT".into(),
            k: 1,
            problems: 3,
            pass_at_k: 1.0 / 3.0,
        }],
        ..ReportInput::default()
    };
    let md = fs::read_to_string(write_report(&dir, &input).unwrap()).unwrap();
    assert!(md.contains("| SFT | 1 | 3 | 33.33% |"));
    assert!(!md.contains(".png"));
    assert!(!dir.join(SCORES_FILE).exists());
    assert!(!dir.join(REWARD_CURVES_FILE).exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn plots_refuse_empty_data() {
    assert!(reward_curves_png(&[], "t").is_err());
    let nan = PolicyScores {
        policy: "x".into(),
        scores: vec![f64::NAN],
    };
    assert!(score_histograms_png(&[nan], "t").is_err());
    // A single point still has a usable range.
    let one = RewardCurve {
        run: "r".into(),
        points: vec![(0.0, 1.0)],
    };
    assert!(reward_curves_png(&[one], "t").is_ok());
}
