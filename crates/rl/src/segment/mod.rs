//! Termination conditions: where each macro action of a response begins.
//!
//! A segmentation is a list of `starts`, offsets into the response where
//! each macro action begins: the first is 0, they increase strictly, and
//! macro action `i` covers tokens `starts[i]..starts[i + 1]` (the last one
//! runs to the end of the response). Every condition here keeps two
//! invariants, checked by [`validate_starts`]:
//!
//! - an empty response has no macro actions (`starts` is empty);
//! - for a response of two or more tokens, the last token is a macro action
//!   of its own. It carries the reward model's score, and aggregating it
//!   with other tokens (a mean, say) would dilute the score — the reference
//!   code notes the same requirement in `train_rlhf`.
//!
//! The reference implementation (`ppo_trainer.py` of the MA-RLHF
//! DeepSpeed-Chat fork) segments one sequence per batch on the padded
//! action mask; here every response is segmented on its own, over its real
//! tokens, so padding never enters a macro action.

mod parsing;

pub use parsing::parsing;

use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{check_finite, RlError};

/// The n-gram lengths the randomized condition draws from (the paper's set).
pub const RANDOMIZED_LENGTHS: [u32; 5] = [1, 2, 3, 5, 10];

/// A termination condition: the rule that ends one macro action and starts
/// the next. The string form (`fixed:5`, `randomized:3`, `ppl`, `parsing:5`)
/// is what `segments.parquet` stores in its `termination` column and what
/// the stages take on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Termination {
    /// Every `n` tokens; `n = 1` is vanilla token-level PPO.
    Fixed { n: u32 },
    /// Lengths from [`RANDOMIZED_LENGTHS`], each `repeat_times` times, shuffled.
    Randomized { repeat_times: u32 },
    /// Where the reference model's per-token perplexity rises.
    Ppl,
    /// Constituents of a chunk parse with fewer than `cutoff` tokens.
    Parsing { cutoff: u32 },
}

impl Termination {
    /// Vanilla PPO: one macro action per token.
    pub const TOKEN: Termination = Termination::Fixed { n: 1 };
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Fixed { n } => write!(f, "fixed:{n}"),
            Termination::Randomized { repeat_times } => write!(f, "randomized:{repeat_times}"),
            Termination::Ppl => write!(f, "ppl"),
            Termination::Parsing { cutoff } => write!(f, "parsing:{cutoff}"),
        }
    }
}

impl FromStr for Termination {
    type Err = RlError;

    fn from_str(s: &str) -> Result<Self, RlError> {
        let fail = |reason: &str| RlError::ParseTermination {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (name, arg) = match s.split_once(':') {
            Some((name, arg)) => (name, Some(arg)),
            None => (s, None),
        };
        let positive = |arg: Option<&str>| -> Result<u32, RlError> {
            let arg = arg.ok_or_else(|| fail("missing the number after ':'"))?;
            match arg.parse::<u32>() {
                Ok(0) => Err(fail("the number must be at least 1")),
                Ok(n) => Ok(n),
                Err(_) => Err(fail("the part after ':' is not a whole number")),
            }
        };
        match name {
            "fixed" => Ok(Termination::Fixed { n: positive(arg)? }),
            "randomized" => Ok(Termination::Randomized {
                repeat_times: positive(arg)?,
            }),
            "parsing" => Ok(Termination::Parsing {
                cutoff: positive(arg)?,
            }),
            "ppl" if arg.is_none() => Ok(Termination::Ppl),
            "ppl" => Err(fail("ppl takes no number")),
            _ => Err(fail("unknown condition")),
        }
    }
}

/// What one response offers the termination conditions. Only the fields the
/// chosen condition reads must be set: `ref_logprobs` for `ppl`, `pieces`
/// for `parsing`, `seed` and `id` for `randomized`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentInput<'a> {
    /// Number of response tokens.
    pub len: usize,
    /// The reference model's log-probability of each response token.
    pub ref_logprobs: Option<&'a [f32]>,
    /// Each response token's vocabulary piece (`Ġthe`, `▁the`), or its text
    /// with its leading space kept. Prefer the vocabulary piece: decoding one
    /// token at a time with a SentencePiece tokenizer drops that space, and
    /// the parser reads word boundaries from it.
    pub pieces: Option<&'a [String]>,
    /// The run's seed.
    pub seed: u64,
    /// The rollout id: with `seed`, it fixes the randomized shuffle, so a
    /// rollout gets the same segmentation whichever batch or order it is in.
    pub id: u64,
}

/// Segments one response with `termination`.
pub fn segment(termination: &Termination, input: &SegmentInput) -> Result<Vec<u32>, RlError> {
    let missing = |what| RlError::MissingInput {
        termination: termination.to_string(),
        what,
    };
    let starts = match *termination {
        Termination::Fixed { n } => fixed_ngram(input.len, n)?,
        Termination::Randomized { repeat_times } => {
            let mut rng = rollout_rng(input.seed, input.id);
            randomized_ngram(input.len, repeat_times, &mut rng)?
        }
        Termination::Ppl => {
            let ref_logprobs = input.ref_logprobs.ok_or_else(|| missing("ref_logprobs"))?;
            if ref_logprobs.len() != input.len {
                return Err(RlError::length(
                    "ref_logprobs",
                    input.len,
                    ref_logprobs.len(),
                ));
            }
            ppl(ref_logprobs)?
        }
        Termination::Parsing { cutoff } => {
            let pieces = input.pieces.ok_or_else(|| missing("token pieces"))?;
            if pieces.len() != input.len {
                return Err(RlError::length("token pieces", input.len, pieces.len()));
            }
            parsing(pieces, cutoff)?
        }
    };
    debug_assert!(validate_starts(&starts, input.len).is_ok());
    Ok(starts)
}

/// The random stream of one rollout: the run's seed picks the key, the
/// rollout id the ChaCha stream, so rollouts never share draws.
pub fn rollout_rng(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

/// A new macro action every `n` tokens (`fixed_ngram_selection`).
///
/// Starts are `0, n, 2n, …` below the last token, then the last token.
pub fn fixed_ngram(len: usize, n: u32) -> Result<Vec<u32>, RlError> {
    if n == 0 {
        return Err(RlError::param("n-gram length", "must be at least 1"));
    }
    let candidates = (0..len).step_by(n as usize);
    close(candidates, len)
}

/// Macro-action lengths drawn from [`RANDOMIZED_LENGTHS`], each repeated
/// `repeat_times`, shuffled with `rng` (`randomized_ngram_selection`). Once
/// the lengths are used up, the rest of the response (but the last token) is
/// one macro action; lengths that would reach the last token are cut there.
pub fn randomized_ngram<R: Rng + ?Sized>(
    len: usize,
    repeat_times: u32,
    rng: &mut R,
) -> Result<Vec<u32>, RlError> {
    if repeat_times == 0 {
        return Err(RlError::param("repeat_times", "must be at least 1"));
    }
    // Same order as torch.repeat_interleave before the shuffle, so a shuffle
    // is the only source of randomness.
    let mut lengths: Vec<usize> = RANDOMIZED_LENGTHS
        .iter()
        .flat_map(|&l| std::iter::repeat_n(l as usize, repeat_times as usize))
        .collect();
    lengths.shuffle(rng);
    let candidates = std::iter::once(0).chain(lengths.into_iter().scan(0, |end, l| {
        *end += l;
        Some(*end)
    }));
    close(candidates, len)
}

/// Perplexity-based termination (`ppl_selection`).
///
/// Per-token perplexity is `exp(−ref_logprob)`. Following the reference
/// code exactly, token `i` opens a new macro action when the perplexity
/// rises from token `i` to token `i + 1` (not at `i + 1`, which a literal
/// reading of "starts where the perplexity rises" would suggest): a macro
/// action ends on the token before a low point, and the next one runs from
/// that low point through the rise. The comparison is done on the
/// log-probabilities (`ref[i + 1] < ref[i]`), which is the same order as the
/// perplexities without `exp` rounding two close values to a tie.
pub fn ppl(ref_logprobs: &[f32]) -> Result<Vec<u32>, RlError> {
    check_finite("ref_logprobs", ref_logprobs)?;
    let len = ref_logprobs.len();
    let rises = ref_logprobs
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] < w[0])
        .map(|(i, _)| i);
    close(std::iter::once(0).chain(rises), len)
}

/// Turns candidate starts (increasing, possibly repeated, possibly past the
/// end) into a valid segmentation: keep those before the last token, then
/// give the last token its own macro action.
fn close(candidates: impl IntoIterator<Item = usize>, len: usize) -> Result<Vec<u32>, RlError> {
    if len > u32::MAX as usize {
        return Err(RlError::param(
            "response length",
            format!("{len} tokens do not fit u32 offsets"),
        ));
    }
    let mut starts: Vec<u32> = Vec::new();
    if len == 0 {
        return Ok(starts);
    }
    let last = len - 1;
    for c in candidates {
        if c >= last {
            break;
        }
        if starts.last().is_none_or(|&s| (s as usize) < c) {
            starts.push(c as u32);
        }
    }
    starts.push(last as u32);
    Ok(starts)
}

/// Checks that `starts` segments a response of `len` tokens: empty for an
/// empty response, else beginning at 0, strictly increasing, inside the
/// response, and (for `len ≥ 2`) with the last token a macro action of its
/// own.
pub fn validate_starts(starts: &[u32], len: usize) -> Result<(), RlError> {
    let Some((&first, &last)) = starts.first().zip(starts.last()) else {
        return if len == 0 {
            Ok(())
        } else {
            Err(RlError::starts(len, "no macro actions"))
        };
    };
    if len == 0 {
        return Err(RlError::starts(
            len,
            "an empty response has no macro actions",
        ));
    }
    if first != 0 {
        return Err(RlError::starts(
            len,
            format!("the first start is {first}, not 0"),
        ));
    }
    if let Some(i) = starts.windows(2).position(|w| w[1] <= w[0]) {
        return Err(RlError::starts(
            len,
            format!(
                "starts[{}] = {} does not follow starts[{i}] = {}",
                i + 1,
                starts[i + 1],
                starts[i]
            ),
        ));
    }
    if last as usize >= len {
        return Err(RlError::starts(
            len,
            format!("start {last} is past the end"),
        ));
    }
    if len >= 2 && last as usize != len - 1 {
        return Err(RlError::starts(
            len,
            format!(
                "the last token ({}) is not a macro action of its own",
                len - 1
            ),
        ));
    }
    Ok(())
}

/// The token range of each macro action.
pub fn spans(starts: &[u32], len: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    starts.iter().enumerate().map(move |(i, &s)| {
        let end = starts.get(i + 1).map_or(len, |&e| e as usize);
        s as usize..end
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_golden() {
        // len 7, n 3: 0, 3 are below the last token 6; 6 closes.
        assert_eq!(fixed_ngram(7, 3).unwrap(), vec![0, 3, 6]);
        // len 7, n 2: 0, 2, 4 (6 is the last token itself, kept once).
        assert_eq!(fixed_ngram(7, 2).unwrap(), vec![0, 2, 4, 6]);
        // n larger than the response: everything but the last token, then it.
        assert_eq!(fixed_ngram(4, 5).unwrap(), vec![0, 3]);
        assert_eq!(fixed_ngram(1, 5).unwrap(), vec![0]);
        assert_eq!(fixed_ngram(0, 5).unwrap(), Vec::<u32>::new());
        assert_eq!(fixed_ngram(2, 5).unwrap(), vec![0, 1]);
    }

    #[test]
    fn fixed_one_is_one_macro_action_per_token() {
        for len in 0..20 {
            let want: Vec<u32> = (0..len as u32).collect();
            assert_eq!(fixed_ngram(len, 1).unwrap(), want);
        }
    }

    #[test]
    fn fixed_zero_is_an_error() {
        let err = fixed_ngram(5, 0).unwrap_err().to_string();
        assert_eq!(err, "invalid n-gram length: must be at least 1");
    }

    /// Replays `fixed_ngram_selection` on an all-ones mask of one sequence
    /// (start = 0), duplicates and all, as an independent reference.
    fn reference_fixed(len: usize, n: usize) -> Vec<u32> {
        let mut ma = vec![0u32];
        let mut count = 0;
        for i in 0..len - 1 {
            count += 1;
            if count == n {
                ma.push((i + 1) as u32);
                count = 0;
            }
        }
        ma.push((len - 1) as u32);
        ma.dedup(); // the reference leaves an empty macro action here
        ma
    }

    #[test]
    fn fixed_matches_the_reference_loop() {
        for len in 1..40 {
            for n in 1..12 {
                assert_eq!(fixed_ngram(len, n as u32).unwrap(), reference_fixed(len, n));
            }
        }
    }

    #[test]
    fn randomized_follows_its_shuffled_lengths() {
        let repeat = 2;
        let mut lengths: Vec<usize> = RANDOMIZED_LENGTHS
            .iter()
            .flat_map(|&l| [l as usize; 2])
            .collect();
        lengths.shuffle(&mut rollout_rng(7, 3));
        let starts = randomized_ngram(200, repeat, &mut rollout_rng(7, 3)).unwrap();
        // 10 lengths summing to 2·(1+2+3+5+10) = 42: 11 starts up to 42, then
        // the rest (42..199) is one macro action and 199 closes.
        assert_eq!(starts.len(), 12);
        let got: Vec<usize> = starts[..11]
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .collect();
        assert_eq!(got, lengths);
        assert_eq!(starts[10], 42);
        assert_eq!(starts[11], 199);
    }

    #[test]
    fn randomized_is_deterministic_per_seed_and_id() {
        let at = |seed, id| {
            segment(
                &Termination::Randomized { repeat_times: 3 },
                &SegmentInput {
                    len: 120,
                    seed,
                    id,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        assert_eq!(at(1, 5), at(1, 5));
        assert_ne!(at(1, 5), at(1, 6), "rollouts must not share a shuffle");
        assert_ne!(at(1, 5), at(2, 5), "the seed must matter");
        for len in 0..60 {
            let s = randomized_ngram(len, 1, &mut rollout_rng(0, len as u64)).unwrap();
            validate_starts(&s, len).unwrap();
        }
    }

    #[test]
    fn ppl_golden() {
        // ref logprobs → perplexities exp(1), exp(2), exp(0.5), exp(3), exp(3), exp(1)
        //   = 2.72, 7.39, 1.65, 20.1, 20.1, 2.72
        // rises from i to i+1 at i = 0 (2.72→7.39) and i = 2 (1.65→20.1);
        // i = 3 (20.1→20.1) is no rise. Starts: 0, 2, then the last token 5.
        let r = [-1.0, -2.0, -0.5, -3.0, -3.0, -1.0];
        assert_eq!(ppl(&r).unwrap(), vec![0, 2, 5]);
        // A rise into the last token: i = 3 opens, 4 closes.
        assert_eq!(ppl(&[-1.0, -0.5, -0.2, -0.1, -4.0]).unwrap(), vec![0, 3, 4]);
        assert_eq!(ppl(&[-1.0]).unwrap(), vec![0]);
        assert_eq!(ppl(&[]).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn ppl_rejects_nan() {
        let err = ppl(&[-1.0, f32::NAN, -2.0]).unwrap_err().to_string();
        assert_eq!(err, "ref_logprobs[1] is not finite");
    }

    #[test]
    fn segment_needs_its_inputs() {
        let input = SegmentInput {
            len: 3,
            ..Default::default()
        };
        let err = segment(&Termination::Ppl, &input).unwrap_err().to_string();
        assert_eq!(err, "termination ppl needs ref_logprobs");
        let err = segment(&Termination::Parsing { cutoff: 3 }, &input)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "termination parsing:3 needs token pieces");
        let r = [0.0f32; 2];
        let short = SegmentInput {
            len: 3,
            ref_logprobs: Some(&r),
            ..Default::default()
        };
        let err = segment(&Termination::Ppl, &short).unwrap_err().to_string();
        assert_eq!(err, "ref_logprobs has length 2, expected 3");
    }

    #[test]
    fn empty_response_everywhere() {
        let pieces: Vec<String> = vec![];
        let input = SegmentInput {
            len: 0,
            ref_logprobs: Some(&[]),
            pieces: Some(&pieces),
            ..Default::default()
        };
        for t in ["fixed:5", "randomized:2", "ppl", "parsing:4"] {
            let t: Termination = t.parse().unwrap();
            assert_eq!(segment(&t, &input).unwrap(), Vec::<u32>::new(), "{t}");
        }
    }

    #[test]
    fn termination_round_trips() {
        for s in ["fixed:1", "fixed:5", "randomized:3", "ppl", "parsing:5"] {
            let t: Termination = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
        assert_eq!(
            "fixed:1".parse::<Termination>().unwrap(),
            Termination::TOKEN
        );
    }

    #[test]
    fn termination_parse_errors() {
        let err = |s: &str| s.parse::<Termination>().unwrap_err().to_string();
        assert_eq!(
            err("fixed"),
            "invalid termination \"fixed\": missing the number after ':' \
             (expected fixed:N, randomized:N, ppl or parsing:N)"
        );
        assert!(err("fixed:0").contains("at least 1"));
        assert!(err("fixed:x").contains("not a whole number"));
        assert!(err("ppl:3").contains("ppl takes no number"));
        assert!(err("bpe:3").contains("unknown condition"));
    }

    #[test]
    fn validate_starts_errors() {
        let err = |s: &[u32], len| validate_starts(s, len).unwrap_err().to_string();
        validate_starts(&[], 0).unwrap();
        validate_starts(&[0], 1).unwrap();
        validate_starts(&[0, 2, 4], 5).unwrap();
        assert!(err(&[], 3).ends_with("no macro actions"));
        assert!(err(&[0], 0).contains("empty response"));
        assert!(err(&[1, 4], 5).contains("first start is 1"));
        assert!(err(&[0, 2, 2, 4], 5).contains("starts[2] = 2 does not follow starts[1] = 2"));
        assert!(err(&[0, 3, 5], 5).contains("start 5 is past the end"));
        assert!(err(&[0, 2], 5).contains("last token (4) is not a macro action of its own"));
    }

    #[test]
    fn spans_cover_the_response() {
        let got: Vec<_> = spans(&[0, 2, 4], 5).collect();
        assert_eq!(got, vec![0..2, 2..4, 4..5]);
        assert_eq!(spans(&[], 0).count(), 0);
    }
}
