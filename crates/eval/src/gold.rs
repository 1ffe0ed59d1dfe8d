//! The gold reward of the `stories` task: a known, deterministic function
//! of a whole story that the proxy reward model is trained to imitate and
//! the policies are finally judged by (Gao et al. 2022's set-up, on a real
//! pretrained model).
//!
//! A story earns two things, each worth half of the reward:
//!
//! - **ending**: it ends within the token budget (the model stops the
//!   story itself, with its end-of-story token) on a finished sentence
//!   (`.`, `!` or `?`, possibly inside a closing quote). The pretrained
//!   model's stories run 190–430 tokens, so within a budget of a few
//!   hundred tokens it rarely manages: the policy has to plan a short arc
//!   from the start and pay it off at the end;
//! - **callback**: something the story introduces in its first sentence (a
//!   content word that the prompt did not already have) comes back in its
//!   last sentence. The choice is made in the first tokens and only pays
//!   off in the last ones.
//!
//! Both are gated, so that neither repetition nor gibberish earns
//! anything: the story must have at least [`GoldParams::min_sentences`]
//! sentences and [`GoldParams::min_words`] words; the reward is scaled by a
//! fluency gate, rising linearly from 0 to 1 as the mean log-probability of
//! the response tokens under the pretrained reference model (at
//! temperature one) goes from `fluency_lo` to `fluency_hi`; and by a
//! repetition gate that
//! falls linearly from 1 to 0 as the share of repeated word trigrams goes
//! from `repeat_lo` to `repeat_hi`.
//!
//! `gold = fluency_gate · repetition_gate · [long enough] · (ending + callback) / 2`,
//! in [0, 1].

use std::collections::HashSet;

/// The gates' thresholds. The fluency gate was set from 600 samples of the
/// pretrained stories260K model at temperature 1 (192 new tokens): their
/// mean token log-probability under the model has median −1.37, 5th
/// percentile −1.64 and minimum −1.94 nats, so ordinary samples pass it
/// fully, while a uniform draw from its 512 tokens (−6.24) gets nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GoldParams {
    pub fluency_lo: f64,
    pub fluency_hi: f64,
    pub repeat_lo: f64,
    pub repeat_hi: f64,
    pub min_sentences: usize,
    pub min_words: usize,
}

impl Default for GoldParams {
    fn default() -> Self {
        GoldParams {
            fluency_lo: -3.0,
            fluency_hi: -2.2,
            repeat_lo: 0.2,
            repeat_hi: 0.5,
            min_sentences: 3,
            min_words: 30,
        }
    }
}

/// The reward and its parts, for the files and the report.
#[derive(Clone, Debug, PartialEq)]
pub struct StoryGold {
    pub gold: f64,
    pub ending: bool,
    pub callback: bool,
    /// The word that came back, if any.
    pub callback_word: Option<String>,
    pub sentences: usize,
    pub words: usize,
    /// Mean reference log-probability per response token.
    pub fluency: f64,
    pub fluency_gate: f64,
    /// Share of word trigrams that repeat an earlier one.
    pub repetition: f64,
    pub repetition_gate: f64,
}

/// Function words and the words nearly every TinyStories story has, which
/// cannot make a callback: returning to "happy" or "day" is not bringing
/// anything back.
const STOPWORDS: &[&str] = &[
    "the",
    "and",
    "was",
    "were",
    "she",
    "her",
    "him",
    "his",
    "they",
    "them",
    "their",
    "you",
    "your",
    "are",
    "for",
    "with",
    "that",
    "this",
    "these",
    "those",
    "but",
    "not",
    "had",
    "has",
    "have",
    "did",
    "does",
    "can",
    "could",
    "would",
    "will",
    "should",
    "all",
    "any",
    "some",
    "from",
    "into",
    "onto",
    "out",
    "too",
    "very",
    "then",
    "than",
    "there",
    "here",
    "when",
    "what",
    "who",
    "why",
    "how",
    "where",
    "which",
    "its",
    "our",
    "off",
    "over",
    "under",
    "again",
    "once",
    "upon",
    "time",
    "day",
    "one",
    "two",
    "said",
    "say",
    "says",
    "saw",
    "see",
    "look",
    "looked",
    "went",
    "go",
    "going",
    "came",
    "come",
    "got",
    "get",
    "made",
    "make",
    "wanted",
    "want",
    "like",
    "liked",
    "loved",
    "love",
    "happy",
    "sad",
    "big",
    "little",
    "small",
    "new",
    "much",
    "many",
    "more",
    "most",
    "also",
    "just",
    "now",
    "even",
    "after",
    "before",
    "because",
    "about",
    "around",
    "every",
    "each",
    "other",
    "another",
    "both",
    "always",
    "never",
    "something",
    "things",
    "thing",
    "lot",
    "lots",
    "way",
    "together",
    "felt",
    "feel",
    "knew",
    "know",
    "think",
    "thought",
    "let",
    "let's",
    "don't",
    "didn't",
    "can't",
    "it's",
    "i'm",
    "he's",
    "she's",
    "play",
    "played",
    "playing",
    "fun",
    "good",
    "bad",
    "nice",
    "best",
    "better",
    "learned",
    "smiled",
    "friends",
    "friend",
    "mom",
    "mommy",
    "dad",
    "daddy",
    "home",
];

fn stopwords() -> HashSet<&'static str> {
    STOPWORDS.iter().copied().collect()
}

/// Lower-case words: runs of letters, with apostrophes inside them.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let inner_apostrophe =
            c == '\'' && !cur.is_empty() && chars.get(i + 1).is_some_and(|n| n.is_alphabetic());
        if c.is_alphabetic() || inner_apostrophe {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Sentences: split after `.`, `!` or `?` (and any closing quotes or
/// brackets right after) and at line breaks; pieces without a letter are
/// dropped.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut flush = |cur: &mut String| {
        let s = cur.trim();
        if s.chars().any(char::is_alphabetic) {
            out.push(s.to_string());
        }
        cur.clear();
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            flush(&mut cur);
        } else {
            cur.push(c);
            if matches!(c, '.' | '!' | '?') {
                while i + 1 < chars.len()
                    && matches!(chars[i + 1], '"' | '\'' | ')' | '”' | '’' | '.' | '!' | '?')
                {
                    i += 1;
                    cur.push(chars[i]);
                }
                flush(&mut cur);
            }
        }
        i += 1;
    }
    flush(&mut cur);
    out
}

/// Whether the text ends on a finished sentence.
fn ends_a_sentence(text: &str) -> bool {
    let t = text.trim_end().trim_end_matches(['"', '\'', ')', '”', '’']);
    t.ends_with(['.', '!', '?'])
}

/// Share of word trigrams that repeat an earlier one (0 for fewer than
/// three words).
pub fn repeated_trigrams(words: &[String]) -> f64 {
    if words.len() < 3 {
        return 0.0;
    }
    let mut seen = HashSet::new();
    let total = words.len() - 2;
    let repeats = words
        .windows(3)
        .filter(|w| !seen.insert((w[0].as_str(), w[1].as_str(), w[2].as_str())))
        .count();
    repeats as f64 / total as f64
}

/// Rises from 0 at `lo` to 1 at `hi`.
fn ramp(x: f64, lo: f64, hi: f64) -> f64 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// The gold reward of `response` to `prompt`. `finished`: the model ended
/// the story itself (its end-of-story token) within the budget.
/// `ref_logprobs`: the response tokens' log-probabilities under the
/// reference model at temperature 1.
pub fn story_gold(
    prompt: &str,
    response: &str,
    finished: bool,
    ref_logprobs: &[f32],
    params: &GoldParams,
) -> StoryGold {
    let stop = stopwords();
    let ws = words(response);
    let ss = sentences(response);
    let prompt_words: HashSet<String> = words(prompt).into_iter().collect();
    let content = |s: &str| -> Vec<String> {
        words(s)
            .into_iter()
            .filter(|w| w.chars().count() >= 3 && !stop.contains(w.as_str()))
            .collect()
    };
    let long_enough = ss.len() >= params.min_sentences && ws.len() >= params.min_words;
    let ending = finished && ends_a_sentence(response);
    let callback_word = if ss.len() >= 2 {
        let last: HashSet<String> = content(&ss[ss.len() - 1]).into_iter().collect();
        content(&ss[0])
            .into_iter()
            .find(|w| !prompt_words.contains(w) && last.contains(w))
    } else {
        None
    };
    let fluency = if ref_logprobs.is_empty() {
        f64::NEG_INFINITY
    } else {
        ref_logprobs.iter().map(|&x| x as f64).sum::<f64>() / ref_logprobs.len() as f64
    };
    let fluency_gate = ramp(fluency, params.fluency_lo, params.fluency_hi);
    let repetition = repeated_trigrams(&ws);
    let repetition_gate = 1.0 - ramp(repetition, params.repeat_lo, params.repeat_hi);
    let parts = (f64::from(u8::from(ending)) + f64::from(u8::from(callback_word.is_some()))) / 2.0;
    let gold = if long_enough {
        fluency_gate * repetition_gate * parts
    } else {
        0.0
    };
    StoryGold {
        gold,
        ending,
        callback: callback_word.is_some(),
        callback_word,
        sentences: ss.len(),
        words: ws.len(),
        fluency,
        fluency_gate,
        repetition,
        repetition_gate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log-probabilities of a fluent story: −2 nats per token.
    fn fluent(n: usize) -> Vec<f32> {
        vec![-2.0; n]
    }

    const PROMPT: &str = "Once upon a time, there was a little girl named Lily.";

    /// Introduces a kite in its first sentence and brings it back at the end.
    const KITE: &str = " She had a red kite that she took to the park every morning. \
        The wind was strong and the kite flew high over the trees and the pond. \
        A bird came to sit on the string and sang a song for her. \
        When the sun went down, Lily held her kite close and walked home.";

    #[test]
    fn a_finished_story_with_a_callback_earns_everything() {
        let g = story_gold(PROMPT, KITE, true, &fluent(60), &GoldParams::default());
        assert!(g.ending && g.callback, "{g:?}");
        assert_eq!(g.callback_word.as_deref(), Some("kite"));
        assert_eq!(g.sentences, 4);
        assert_eq!((g.fluency_gate, g.repetition_gate), (1.0, 1.0));
        assert_eq!(g.gold, 1.0);
    }

    #[test]
    fn each_part_is_worth_half() {
        let p = GoldParams::default();
        // Cut at the budget: no ending, the callback still counts.
        let g = story_gold(PROMPT, KITE, false, &fluent(60), &p);
        assert_eq!((g.ending, g.callback, g.gold), (false, true, 0.5));
        // Finished but the last sentence does not return to the kite.
        let other = KITE.replace("held her kite close", "held her doll close");
        let g = story_gold(PROMPT, &other, true, &fluent(60), &p);
        assert_eq!((g.ending, g.callback, g.gold), (true, false, 0.5));
        // Finished by the model but mid-sentence: no ending.
        let cut = KITE.trim_end_matches("walked home.").to_string() + "walked";
        let g = story_gold(PROMPT, &cut, true, &fluent(60), &p);
        assert!(!g.ending && g.callback);
        // An ending inside a closing quote counts.
        let quoted = format!("{KITE} She said, \"I love my kite!\"");
        let g = story_gold(PROMPT, &quoted, true, &fluent(70), &p);
        assert!(g.ending && g.callback, "{g:?}");
    }

    #[test]
    fn words_from_the_prompt_or_the_stoplist_are_no_callback() {
        let p = GoldParams::default();
        // "lily" is in the prompt; "happy" is on the stoplist.
        let s = " Lily was happy and ran to the garden with a ball and a hat and a cup. \
            She threw the ball and the dog ran after it across the grass. \
            Then the dog brought it back and lay down in the sun. \
            Lily was happy.";
        let g = story_gold(PROMPT, s, true, &fluent(60), &p);
        assert!(!g.callback, "{g:?}");
        assert_eq!(g.gold, 0.5);
    }

    #[test]
    fn short_repetitive_or_gibberish_stories_earn_nothing() {
        let p = GoldParams::default();
        // Too short: two sentences.
        let g = story_gold(
            PROMPT,
            " She had a kite. She loved her kite.",
            true,
            &fluent(10),
            &p,
        );
        assert_eq!(g.gold, 0.0);
        // A loop: the trigram share is far above the gate.
        let looped = " She had a kite.".repeat(12);
        let g = story_gold(PROMPT, &looped, true, &fluent(60), &p);
        assert!(g.repetition > 0.5, "{}", g.repetition);
        assert_eq!((g.repetition_gate, g.gold), (0.0, 0.0));
        // Gibberish: the reference model finds it unlikely (a uniform draw
        // over 512 tokens is −6.24 nats per token).
        let g = story_gold(PROMPT, KITE, true, &vec![-6.24; 60], &p);
        assert_eq!((g.fluency_gate, g.gold), (0.0, 0.0));
        // Halfway up the fluency ramp: −2.6 of [−3.0, −2.2].
        let g = story_gold(PROMPT, KITE, true, &vec![-2.6; 60], &p);
        assert!((g.fluency_gate - 0.5).abs() < 1e-6, "{}", g.fluency_gate);
        assert!((g.gold - 0.5).abs() < 1e-6);
    }

    #[test]
    fn text_helpers_golden() {
        assert_eq!(
            words("Lily's kite, (red) don't-stop"),
            ["lily's", "kite", "red", "don't", "stop"]
        );
        assert_eq!(
            sentences("Hi there. \"Go!\" she said.\nNew line?! ok"),
            ["Hi there.", "\"Go!\"", "she said.", "New line?!", "ok"]
        );
        let w = words("a b c a b c a b");
        // trigrams: abc bca cab abc bca cab → 3 repeats of 6.
        assert_eq!(repeated_trigrams(&w), 0.5);
        assert!(ends_a_sentence("the end.\" "));
        assert!(!ends_a_sentence("the end"));
    }
}
