//! Story openings for the `stories` task, generated from templates with a
//! seed: no raw data is needed, and the same seed gives the same prompts on
//! every machine.
//!
//! Every opening is one sentence in the style of TinyStories ("Once upon a
//! time, there was a little girl named Lily.", "One day, Tom found a shiny
//! key in the garden."), from 12 templates filled with names, animals,
//! things, places and adjectives the pretrained stories260K model knows.
//! The distinct openings are shuffled with the seed and cut into disjoint
//! sets: PPO prompts, evaluation prompts, the prompts whose samples make
//! the reward model's preference pairs, and validation prompts (early
//! stopping and tuning choose on them, never on the evaluation prompts).

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::atomic::FileSet;
use crate::error::{DataError, Result};
use crate::tables::{stage_rows, PromptRow};

const NAMES: &[&str] = &[
    "Lily", "Tom", "Ben", "Sue", "Mia", "Max", "Tim", "Sam", "Anna", "Lucy", "Jack", "Sara",
    "Jane", "Bob", "Amy", "Emma", "Zoe", "Mike", "Daisy", "Rosie", "Timmy", "Molly", "Billy",
    "Kitty",
];
const KIDS: &[&str] = &["girl", "boy"];
const ANIMALS: &[&str] = &[
    "dog", "cat", "bird", "bunny", "bear", "frog", "duck", "fish", "mouse", "lion", "puppy",
    "kitten", "owl", "fox",
];
const THINGS: &[&str] = &[
    "ball", "kite", "box", "key", "hat", "car", "boat", "rock", "flower", "toy", "book", "cake",
    "shell", "balloon", "drum",
];
const PLACES: &[&str] = &[
    "park", "garden", "forest", "beach", "house", "school", "farm", "pond", "shop", "hill", "lake",
    "zoo",
];
const ADJECTIVES: &[&str] = &[
    "big", "little", "red", "blue", "shiny", "happy", "tiny", "old", "funny", "kind", "brave",
    "curious", "soft", "pretty",
];

/// Every opening the templates make, without repeats, in a fixed order.
pub fn all_openings() -> Vec<String> {
    let mut out = Vec::new();
    for &n in NAMES {
        for &k in KIDS {
            out.push(format!(
                "Once upon a time, there was a little {k} named {n}."
            ));
        }
        for &p in PLACES {
            out.push(format!("One day, {n} went to the {p}."));
            out.push(format!("{n} and {} went to the {p} to play.", partner(n)));
        }
        for &t in THINGS {
            out.push(format!("{n} had a new {t}."));
            out.push(format!("{n} loved to play with a {t}."));
            for &p in PLACES {
                out.push(format!("One day, {n} found a {t} in the {p}."));
            }
            for &a in ADJECTIVES {
                out.push(format!("{n} had a {a} {t}."));
            }
        }
        for &an in ANIMALS {
            for &a in ADJECTIVES {
                out.push(format!("Once upon a time, there was a {a} {an} named {n}."));
            }
            out.push(format!("{n} saw a {an}."));
        }
    }
    for &an in ANIMALS {
        for &p in PLACES {
            for &a in ADJECTIVES {
                out.push(format!("There was once a {a} {an} who lived in the {p}."));
            }
            out.push(format!("Once upon a time, in a {p}, there lived a {an}."));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

/// A second name for two-character openings: the next one in the list.
fn partner(name: &str) -> &'static str {
    let i = NAMES.iter().position(|&n| n == name).unwrap_or(0);
    NAMES[(i + 1) % NAMES.len()]
}

/// How many openings each set gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoryCounts {
    pub ppo: usize,
    pub eval: usize,
    pub pairs: usize,
    pub validation: usize,
}

/// The four disjoint prompt sets.
#[derive(Clone, Debug, PartialEq)]
pub struct StoryPrompts {
    pub ppo: Vec<PromptRow>,
    pub eval: Vec<PromptRow>,
    pub pairs: Vec<PromptRow>,
    pub validation: Vec<PromptRow>,
}

/// The four disjoint prompt sets. Ids are unique across them: PPO prompts
/// from 0, evaluation prompts from 1,000,000, pair prompts from
/// 2,000,000, validation prompts from 3,000,000. The sets are cut from one
/// shuffle in that order, so adding validation prompts leaves the other
/// three as they were.
pub fn story_prompts(seed: u64, counts: StoryCounts) -> Result<StoryPrompts> {
    let mut pool = all_openings();
    let needed = counts.ppo + counts.eval + counts.pairs + counts.validation;
    if needed > pool.len() {
        return Err(DataError::invalid(format!(
            "{needed} story prompts asked for, but the templates make {} distinct ones",
            pool.len()
        )));
    }
    pool.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let rows = |texts: &[String], first_id: u64| -> Vec<PromptRow> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| PromptRow {
                id: first_id + i as u64,
                prompt: t.clone(),
                reference: None,
                subreddit: None,
                tests: None,
            })
            .collect()
    };
    let (ppo, rest) = pool.split_at(counts.ppo);
    let (eval, rest) = rest.split_at(counts.eval);
    let (pairs, rest) = rest.split_at(counts.pairs);
    let validation = &rest[..counts.validation];
    Ok(StoryPrompts {
        ppo: rows(ppo, 0),
        eval: rows(eval, 1_000_000),
        pairs: rows(pairs, 2_000_000),
        validation: rows(validation, 3_000_000),
    })
}

/// The files `marlhf-stories prompts` writes into a run's data directory.
pub const PPO_PROMPTS: &str = "prompts.parquet";
pub const EVAL_PROMPTS: &str = "eval_prompts.parquet";
pub const PAIR_PROMPTS: &str = "pair_prompts.parquet";
pub const VALIDATION_PROMPTS: &str = crate::adapters::VALIDATION_PROMPTS_FILE;

/// Writes the four sets into `dir`, all or nothing.
pub fn write_story_prompts(dir: &Path, seed: u64, counts: StoryCounts) -> Result<()> {
    let p = story_prompts(seed, counts)?;
    let mut files = FileSet::new();
    stage_rows(&mut files, &dir.join(PPO_PROMPTS), &p.ppo)?;
    stage_rows(&mut files, &dir.join(EVAL_PROMPTS), &p.eval)?;
    stage_rows(&mut files, &dir.join(PAIR_PROMPTS), &p.pairs)?;
    stage_rows(&mut files, &dir.join(VALIDATION_PROMPTS), &p.validation)?;
    files.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_are_many_distinct_sentences() {
        let all = all_openings();
        assert_eq!(all.len(), 18_264);
        assert!(all.iter().all(|s| s.ends_with('.')));
        assert!(all.contains(&"Once upon a time, there was a little girl named Lily.".to_string()));
        assert!(all.contains(&"One day, Tom found a key in the garden.".to_string()));
    }

    #[test]
    fn sets_are_disjoint_seeded_and_sized() {
        let counts = StoryCounts {
            ppo: 300,
            eval: 50,
            pairs: 120,
            validation: 40,
        };
        let p = story_prompts(7, counts).unwrap();
        let sets = [&p.ppo, &p.eval, &p.pairs, &p.validation];
        assert_eq!(sets.map(Vec::len), [300, 50, 120, 40]);
        let texts: std::collections::HashSet<&str> = sets
            .iter()
            .flat_map(|s| s.iter())
            .map(|r| r.prompt.as_str())
            .collect();
        assert_eq!(texts.len(), 510, "no prompt in two sets");
        assert_eq!(sets.map(|s| s[0].id), [0, 1_000_000, 2_000_000, 3_000_000]);
        assert_eq!(story_prompts(7, counts).unwrap(), p);
        assert_ne!(story_prompts(8, counts).unwrap().ppo, p.ppo);
        // Validation prompts come last: the other sets do not change with
        // them.
        let none = story_prompts(
            7,
            StoryCounts {
                validation: 0,
                ..counts
            },
        )
        .unwrap();
        assert_eq!(
            (&none.ppo, &none.eval, &none.pairs),
            (&p.ppo, &p.eval, &p.pairs)
        );
        assert!(none.validation.is_empty());
        let too_many = StoryCounts {
            ppo: 10_000_000,
            ..counts
        };
        assert!(story_prompts(7, too_many)
            .unwrap_err()
            .to_string()
            .contains("distinct ones"));
    }
}
