//! Deterministic, group-aware data splits. Rows sharing a group key (the
//! prompt) always land in the same split, so an evaluation prompt can never
//! also appear in training, and the reward model never scores a prompt it
//! was trained on under another split's name.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Sft,
    Rm,
    Ppo,
    Eval,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Sft => "sft",
            Split::Rm => "rm",
            Split::Ppo => "ppo",
            Split::Eval => "eval",
        }
    }
}

pub const DEFAULT_SEED: u64 = 1234;
pub const DEFAULT_EVAL_FRACTION: f64 = 0.1;

/// The paper's split of the training data: 20% SFT, 40% RM, 40% PPO.
pub const PAPER_SPLIT: [(Split, f64); 3] = [(Split::Sft, 0.2), (Split::Rm, 0.4), (Split::Ppo, 0.4)];

/// `train` scaled to `1 - eval_fraction`, after a held-out eval share.
pub fn with_eval(eval_fraction: f64, train: &[(Split, f64)]) -> Vec<(Split, f64)> {
    let total: f64 = train.iter().map(|(_, f)| f).sum();
    let mut out = vec![(Split::Eval, eval_fraction)];
    out.extend(
        train
            .iter()
            .map(|&(s, f)| (s, f / total * (1.0 - eval_fraction))),
    );
    out
}

/// Assigns each row (given by its group key) to one of `buckets`, whose
/// fractions are normalised to sum to one. Groups are shuffled with a ChaCha8
/// stream seeded by `seed`, then laid end to end and cut at the cumulative
/// fractions; a group goes wholly to the bucket where it starts. Each bucket
/// therefore gets its share of rows to within one group's size.
pub fn assign<K: AsRef<str>>(keys: &[K], buckets: &[(Split, f64)], seed: u64) -> Vec<Split> {
    assert!(!buckets.is_empty(), "at least one bucket");
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    let mut sizes: Vec<usize> = Vec::new();
    let row_group: Vec<usize> = keys
        .iter()
        .map(|k| {
            let next = sizes.len();
            let g = *group_of.entry(k.as_ref()).or_insert(next);
            if g == next {
                sizes.push(0);
            }
            sizes[g] += 1;
            g
        })
        .collect();

    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));

    let total: f64 = buckets.iter().map(|(_, f)| f.max(0.0)).sum();
    let n = keys.len() as f64;
    let mut cum = 0.0;
    let ends: Vec<usize> = buckets
        .iter()
        .map(|(_, f)| {
            cum += f.max(0.0) / total;
            (cum * n).round() as usize
        })
        .collect();

    let mut group_split = vec![buckets[0].0; sizes.len()];
    let mut cursor = 0usize;
    for g in order {
        let k = ends
            .iter()
            .position(|&end| cursor < end)
            .unwrap_or(buckets.len() - 1);
        group_split[g] = buckets[k].0;
        cursor += sizes[g];
    }
    row_group.into_iter().map(|g| group_split[g]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    /// 1000 rows in groups of 1 to 4 rows.
    fn keys() -> Vec<String> {
        let mut keys = Vec::new();
        let mut g = 0;
        while keys.len() < 1000 {
            for _ in 0..(g % 4 + 1) {
                keys.push(format!("prompt {g}"));
            }
            g += 1;
        }
        keys.truncate(1000);
        // Interleave so groups are not contiguous in the input.
        keys.sort_by_key(|k| k.chars().rev().collect::<String>());
        keys
    }

    fn counts(splits: &[Split]) -> BTreeMap<Split, usize> {
        let mut c = BTreeMap::new();
        for s in splits {
            *c.entry(*s).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn same_seed_same_assignment_other_seed_differs() {
        let k = keys();
        let plan = with_eval(0.1, &PAPER_SPLIT);
        assert_eq!(assign(&k, &plan, 1234), assign(&k, &plan, 1234));
        assert_ne!(assign(&k, &plan, 1234), assign(&k, &plan, 1235));
    }

    #[test]
    fn proportions_hold_within_one_group() {
        let k = keys();
        let plan = with_eval(0.1, &PAPER_SPLIT);
        let c = counts(&assign(&k, &plan, 1234));
        // targets: eval 100, sft 180, rm 360, ppo 360; groups have <= 4 rows
        for (split, target) in [
            (Split::Eval, 100),
            (Split::Sft, 180),
            (Split::Rm, 360),
            (Split::Ppo, 360),
        ] {
            let got = c[&split] as i64;
            assert!((got - target).abs() <= 3, "{split:?}: {got} vs {target}");
        }
        assert_eq!(c.values().sum::<usize>(), 1000);
    }

    #[test]
    fn groups_stay_whole_and_splits_are_disjoint() {
        let k = keys();
        let splits = assign(&k, &with_eval(0.1, &PAPER_SPLIT), 7);
        let mut seen: HashMap<&str, Split> = HashMap::new();
        for (key, s) in k.iter().zip(&splits) {
            assert_eq!(*seen.entry(key).or_insert(*s), *s, "group {key} was split");
        }
        let eval: HashSet<&str> = k
            .iter()
            .zip(&splits)
            .filter(|(_, s)| **s == Split::Eval)
            .map(|(k, _)| k.as_str())
            .collect();
        let train: HashSet<&str> = k
            .iter()
            .zip(&splits)
            .filter(|(_, s)| **s != Split::Eval)
            .map(|(k, _)| k.as_str())
            .collect();
        assert!(eval.is_disjoint(&train));
    }

    #[test]
    fn exact_fractions_with_singleton_groups_and_zero_buckets() {
        let k: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let c = counts(&assign(&k, &PAPER_SPLIT, 1));
        assert_eq!((c[&Split::Sft], c[&Split::Rm], c[&Split::Ppo]), (2, 4, 4));
        let c = counts(&assign(
            &k,
            &[(Split::Sft, 0.2), (Split::Rm, 0.0), (Split::Ppo, 0.8)],
            1,
        ));
        assert_eq!(
            (c[&Split::Sft], c.get(&Split::Rm), c[&Split::Ppo]),
            (2, None, 8)
        );
    }

    #[test]
    fn with_eval_scales_the_rest() {
        let plan = with_eval(0.1, &PAPER_SPLIT);
        let f: Vec<f64> = plan.iter().map(|(_, f)| *f).collect();
        for (a, b) in f.iter().zip([0.1, 0.18, 0.36, 0.36]) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
