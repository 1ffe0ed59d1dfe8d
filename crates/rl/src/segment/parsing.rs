//! Parsing-based termination: a small rule-based chunk parser over the
//! decoded token pieces of a response.
//!
//! The paper segments with the constituency tree of a syntax parser: the
//! released `parsing_selection` splits the decoded response into sentences
//! (on `(?<=[.!?]) +|\n`) and parses each with constituent_treelib (a
//! benepar/spaCy pipeline). A neural parser has no place in a Rust toolkit
//! that must run offline and bit for bit, so this module builds a shallow
//! constituency tree from word and punctuation structure alone, with
//! closed-class English word lists, and applies the released code's rules
//! to it.
//!
//! # Words
//!
//! Each token piece is read after mapping the tokenizer space markers
//! (`Ġ`, `▁` → space, `Ċ` → newline, `ĉ` → tab). A piece is *blank*
//! (whitespace only — a *break* if it holds a newline), *punctuation* (no
//! letter, digit or apostrophe) or *alphanumeric*. A piece continues the
//! word of the piece before it when it has no leading whitespace and:
//! both are alphanumeric (`Ġun` `believ` `able`), both are punctuation
//! (`.` `.` `.`), or it is punctuation squeezed between two alphanumeric
//! pieces without spaces (`3` `.` `5`, `e` `-` `mail`, `don` `'` `t`), or
//! alphanumeric after such squeezed punctuation. A blank piece without a
//! newline trails the word before it; consecutive breaks form one word.
//!
//! Words then get a kind: sentence punctuation (containing `. ! ? …`),
//! clause punctuation (`, ; :` and dashes), opening brackets and quotes,
//! line breaks, conjunctions and relativisers (`and`, `because`, `which`,
//! `that`, …), function words (determiners, prepositions, auxiliaries and
//! modals, pronouns) and, for everything else, content words.
//!
//! # Tree
//!
//! - response → **sentences**, split after sentence punctuation and line
//!   breaks (further breaks and punctuation stay with the sentence they
//!   close; a closing quote or bracket glued to the full stop is part of
//!   its word already). As in the released code, each sentence is a tree
//!   of its own: every sentence start is a macro-action boundary;
//! - sentence → **clauses**, split after clause punctuation and before a
//!   conjunction (a run like `and because` opens one clause);
//! - clause → **phrases**: a run of function words (or an opening bracket)
//!   opens a phrase that the following content words continue, so
//!   `I have been walking in the park` gives `[I have been walking]`,
//!   `[in the park]` — roughly the chunks of a shallow parse (NP, PP, VP
//!   with its auxiliaries);
//! - phrase → **words**: no grammar is left, so words are packed greedily
//!   into runs of fewer than `cutoff` tokens;
//! - word → tokens: a word is never split.
//!
//! A node with a single child is the same constituent as its child, so the
//! walk goes straight through it.
//!
//! # Macro actions
//!
//! Each sentence's tree is walked top-down with the released code's two
//! rules, in its order:
//!
//! 1. a constituent of a single *word* (a parse leaf, however many tokens
//!    it has) joins the macro action before it in its sentence; the first
//!    one of a sentence has none before it and stands alone, and single
//!    words right after it join it;
//! 2. any other constituent with fewer than `cutoff` tokens becomes a macro
//!    action; larger ones are split into their children.
//!
//! Words are never split. Like the released code, a join is not bounded by
//! `cutoff`, so a run of single words can make a macro action longer than
//! it. Finally the response's last token is split off into its own macro
//! action, as for every termination condition.
//!
//! # Limits
//!
//! No part-of-speech tagging: ambiguous words take one fixed role (`that` is
//! always a relativiser, `to` always a preposition, `her` a determiner),
//! and a content word that happens to head a new phrase (`The cat sat`)
//! does not split it. The word lists are English; other languages fall back
//! on punctuation, line breaks and words. Code gets lines as sentences and
//! punctuation as clause or phrase boundaries, a coarse stand-in for the
//! reference's syntax-tree chunks. Byte-level pieces of a multi-byte
//! character that decode to replacement characters count as punctuation.

use std::ops::Range;

use crate::error::RlError;

/// Segments a response from its decoded token pieces (see the module docs).
pub fn parsing(pieces: &[String], cutoff: u32) -> Result<Vec<u32>, RlError> {
    if cutoff == 0 {
        return Err(RlError::param("parser cutoff", "must be at least 1"));
    }
    let len = pieces.len();
    let words = words(pieces);
    let mut starts = Vec::new();
    if !words.is_empty() {
        for sentence in children(&words, Level::Sentences, cutoff as usize) {
            let mut nodes = Vec::new();
            emit(
                &words[sentence],
                Level::Clauses,
                cutoff as usize,
                &mut nodes,
            );
            starts.extend(join_single_words(&nodes).into_iter().map(|(s, _)| s));
        }
    }
    super::close(starts, len)
}

/// A constituent the walk stops at: its token span, and whether it is a
/// single word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    start: usize,
    end: usize,
    single_word: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Alnum,
    Punct,
    Blank,
    Break,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Content,
    Function,
    Conjunction,
    Opening,
    ClausePunct,
    SentencePunct,
    LineBreak,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Word {
    /// First token of the word.
    start: usize,
    /// One past its last token.
    end: usize,
    kind: Kind,
}

/// A piece with the tokenizer's space markers turned back into whitespace.
fn normalise(piece: &str) -> String {
    piece
        .chars()
        .map(|c| match c {
            'Ġ' | '▁' => ' ',
            'Ċ' => '\n',
            'ĉ' => '\t',
            c => c,
        })
        .collect()
}

fn classify(text: &str) -> Piece {
    let core = text.trim();
    if core.is_empty() {
        if text.contains('\n') {
            Piece::Break
        } else {
            Piece::Blank
        }
    } else if core.chars().any(|c| c.is_alphanumeric() || c == '\'') {
        Piece::Alnum
    } else {
        Piece::Punct
    }
}

/// Groups token pieces into words (see "Words" in the module docs).
fn words(pieces: &[String]) -> Vec<Word> {
    let texts: Vec<String> = pieces.iter().map(|p| normalise(p)).collect();
    let class: Vec<Piece> = texts.iter().map(|t| classify(t)).collect();
    let lead: Vec<bool> = texts
        .iter()
        .map(|t| t.starts_with(char::is_whitespace))
        .collect();
    // Punctuation glued on both sides to alphanumeric pieces: `3.5`, `e-mail`.
    let squeezed = |t: usize| {
        class[t] == Piece::Punct
            && !lead[t]
            && t > 0
            && class[t - 1] == Piece::Alnum
            && class.get(t + 1) == Some(&Piece::Alnum)
            && !lead[t + 1]
    };
    let continues = |t: usize| -> bool {
        if t == 0 {
            return false;
        }
        match (class[t - 1], class[t]) {
            (Piece::Break, Piece::Break) => true,
            (Piece::Break, _) | (_, Piece::Break) => false,
            (_, Piece::Blank) => true,
            (Piece::Blank, _) => false,
            _ if lead[t] => false,
            (Piece::Alnum, Piece::Alnum) | (Piece::Punct, Piece::Punct) => true,
            (Piece::Alnum, Piece::Punct) => squeezed(t),
            (Piece::Punct, Piece::Alnum) => squeezed(t - 1),
        }
    };

    let mut words: Vec<Word> = Vec::new();
    for t in 0..pieces.len() {
        match words.last_mut() {
            Some(w) if continues(t) => w.end = t + 1,
            _ => words.push(Word {
                start: t,
                end: t + 1,
                kind: Kind::Content,
            }),
        }
    }
    for w in &mut words {
        let text: String = texts[w.start..w.end].concat();
        w.kind = kind(&text);
    }
    words
}

fn kind(text: &str) -> Kind {
    let core = text.trim();
    if core.is_empty() {
        return if text.contains('\n') {
            Kind::LineBreak
        } else {
            Kind::Content
        };
    }
    if core.chars().any(|c| c.is_alphanumeric()) {
        let lower = core.to_lowercase();
        return if CONJUNCTIONS.contains(&lower.as_str()) {
            Kind::Conjunction
        } else if FUNCTION_WORDS.contains(&lower.as_str()) {
            Kind::Function
        } else {
            Kind::Content
        };
    }
    if core.chars().any(|c| matches!(c, '.' | '!' | '?' | '…')) {
        Kind::SentencePunct
    } else if core
        .chars()
        .any(|c| matches!(c, ',' | ';' | ':' | '—' | '–'))
        || core == "-"
        || core == "--"
    {
        Kind::ClausePunct
    } else if core
        .chars()
        .all(|c| matches!(c, '(' | '[' | '{' | '“' | '‘' | '«'))
        || (text.starts_with(char::is_whitespace) && core.chars().all(|c| c == '"' || c == '\''))
    {
        // A straight quote opens when a space comes before it.
        Kind::Opening
    } else {
        Kind::Content
    }
}

/// Coordinating and subordinating conjunctions, relativisers and
/// complementisers: each opens a clause.
const CONJUNCTIONS: &[&str] = &[
    "and",
    "but",
    "or",
    "nor",
    "so",
    "yet",
    "because",
    "although",
    "though",
    "while",
    "whereas",
    "if",
    "unless",
    "since",
    "when",
    "whenever",
    "where",
    "wherever",
    "whether",
    "until",
    "once",
    "which",
    "who",
    "whom",
    "whose",
    "that",
    "then",
    "however",
    "therefore",
    "otherwise",
];

/// Determiners, prepositions, auxiliaries and modals, personal pronouns and
/// the infinitive `to`: each opens a phrase.
const FUNCTION_WORDS: &[&str] = &[
    // determiners
    "the",
    "a",
    "an",
    "this",
    "these",
    "those",
    "my",
    "your",
    "his",
    "her",
    "its",
    "our",
    "their",
    "some",
    "any",
    "each",
    "every",
    "no",
    "all",
    "both",
    "either",
    "neither",
    "many",
    "much",
    "few",
    "several",
    "such",
    "another",
    "other",
    // prepositions
    "of",
    "in",
    "on",
    "at",
    "to",
    "for",
    "with",
    "by",
    "from",
    "about",
    "into",
    "onto",
    "over",
    "under",
    "after",
    "before",
    "between",
    "through",
    "during",
    "without",
    "within",
    "against",
    "among",
    "around",
    "across",
    "behind",
    "below",
    "above",
    "beyond",
    "near",
    "toward",
    "towards",
    "upon",
    "like",
    "as",
    "than",
    "via",
    "per",
    // auxiliaries and modals
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "am",
    "do",
    "does",
    "did",
    "have",
    "has",
    "had",
    "can",
    "could",
    "will",
    "would",
    "shall",
    "should",
    "may",
    "might",
    "must",
    // pronouns
    "i",
    "you",
    "he",
    "she",
    "it",
    "we",
    "they",
    "me",
    "him",
    "us",
    "them",
    "myself",
    "yourself",
    "himself",
    "herself",
    "itself",
    "ourselves",
    "themselves",
    "there",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Sentences,
    Clauses,
    Phrases,
    Words,
}

impl Level {
    fn below(self) -> Level {
        match self {
            Level::Sentences => Level::Clauses,
            Level::Clauses => Level::Phrases,
            Level::Phrases | Level::Words => Level::Words,
        }
    }
}

/// Words that close what comes before them rather than open what follows:
/// line breaks and stray punctuation after a boundary. (Closing brackets and
/// quotes glued to punctuation, as in `."` or `),`, are part of that
/// punctuation word already.)
fn trails(w: &Word) -> bool {
    matches!(
        w.kind,
        Kind::LineBreak | Kind::SentencePunct | Kind::ClausePunct
    )
}

fn is_opener(kind: Kind) -> bool {
    matches!(kind, Kind::Function | Kind::Conjunction | Kind::Opening)
}

/// Whether a new child of a `level` node starts at word `k` (`k ≥ 1`).
fn splits_before(words: &[Word], k: usize, level: Level) -> bool {
    let (prev, here) = (&words[k - 1], &words[k]);
    match level {
        Level::Sentences => {
            matches!(prev.kind, Kind::SentencePunct | Kind::LineBreak) && !trails(here)
        }
        Level::Clauses => {
            (prev.kind == Kind::ClausePunct && !trails(here))
                || (here.kind == Kind::Conjunction
                    && !matches!(prev.kind, Kind::Conjunction | Kind::Opening))
        }
        Level::Phrases => is_opener(here.kind) && !is_opener(prev.kind),
        // Words are packed by `children`, never split by rule.
        Level::Words => true,
    }
}

/// Appends the constituents the walk stops at inside `words`, a `level`
/// node of one sentence: single words (rule 1) and constituents of fewer
/// than `cutoff` tokens (rule 2).
fn emit(words: &[Word], mut level: Level, cutoff: usize, out: &mut Vec<Node>) {
    let (start, end) = (words[0].start, words[words.len() - 1].end);
    if words.len() == 1 || end - start < cutoff {
        out.push(Node {
            start,
            end,
            single_word: words.len() == 1,
        });
        return;
    }
    loop {
        let children = children(words, level, cutoff);
        if children.len() == 1 {
            // One child: the same constituent one level down.
            level = level.below();
            continue;
        }
        for child in children {
            emit(&words[child], level.below(), cutoff, out);
        }
        return;
    }
}

/// The children of a `level` node, as ranges of its words. Below phrases
/// there is no more grammar, so words are packed greedily, left to right,
/// into runs of fewer than `cutoff` tokens (a word that alone has `cutoff`
/// tokens or more is a run of its own). A node of two or more words and at
/// least `cutoff` tokens always gets two or more runs, so the walk ends.
fn children(words: &[Word], level: Level, cutoff: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    if level == Level::Words {
        let mut tokens = 0;
        for (k, w) in words.iter().enumerate() {
            let n = w.end - w.start;
            if k > start && tokens + n >= cutoff {
                out.push(start..k);
                (start, tokens) = (k, 0);
            }
            tokens += n;
        }
    } else {
        for k in 1..words.len() {
            if splits_before(words, k, level) {
                out.push(start..k);
                start = k;
            }
        }
    }
    out.push(start..words.len());
    out
}

/// The macro actions of one sentence's walk: a single word joins the macro
/// action before it (rule 1); the sentence's first node stands alone
/// whatever it is.
fn join_single_words(nodes: &[Node]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(nodes.len());
    for n in nodes {
        match out.last_mut() {
            Some(last) if n.single_word => last.1 = n.end,
            _ => out.push((n.start, n.end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn word_spans(p: &[&str]) -> Vec<(usize, usize, Kind)> {
        words(&pieces(p))
            .into_iter()
            .map(|w| (w.start, w.end, w.kind))
            .collect()
    }

    #[test]
    fn words_from_pieces() {
        use Kind::*;
        let got = word_spans(&[
            "Hello", ",", "Ġwor", "ld", "!", "ĠI", "'m", "Ġ3", ".", "5", "Ġyears", ".",
        ]);
        // `,` and `!` are not squeezed (a space follows), `'m` continues `I`,
        // `.` between `3` and `5` is, so `3.5` is one word.
        let want = vec![
            (0, 1, Content),
            (1, 2, ClausePunct),
            (2, 4, Content),
            (4, 5, SentencePunct),
            (5, 7, Content),
            (7, 10, Content),
            (10, 11, Content),
            (11, 12, SentencePunct),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn words_kinds_and_blanks() {
        use Kind::*;
        // Decoded pieces with real spaces; `Ċ` and `\n` are both breaks and
        // consecutive breaks are one word; a bare space trails its word.
        let got = word_spans(&[
            " The", " (", "big", ")", " ", "and", "\n", "Ċ", " it", " ...",
        ]);
        let want = vec![
            (0, 1, Function),
            (1, 2, Opening),
            (2, 3, Content),
            (3, 5, Content), // `)` plus the bare space
            (5, 6, Conjunction),
            (6, 8, LineBreak),
            (8, 9, Function),
            (9, 10, SentencePunct),
        ];
        assert_eq!(got, want);
    }

    /// "The cat sat on the mat. It was happy, and it purred loudly."
    /// one token per word, tokens numbered 0..16.
    const CAT: [&str; 16] = [
        "The", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", ".", "ĠIt", "Ġwas", "Ġhappy", ",", "Ġand",
        "Ġit", "Ġpurred", "Ġloudly", ".",
    ];

    #[test]
    fn cat_cutoff_5() {
        // Sentences: 0..7 (7 tokens) and 7..16 (9 tokens), both ≥ 5.
        // S1, one clause → phrases split before `on`: [The cat sat] (3),
        //   [on the mat .] (4): both < 5, macro actions.
        // S2 → clauses split after `,` / before `and`: [It was happy ,] (4)
        //   is one; [and it purred loudly .] (5) has one phrase (`and it`
        //   is a run of openers), so its words are packed into runs of < 5
        //   tokens: [and it purred loudly] [.]; the single word `.` joins.
        // Last token 15 split off: starts 0, 3, 7, 11, 15.
        assert_eq!(parsing(&pieces(&CAT), 5).unwrap(), vec![0, 3, 7, 11, 15]);
    }

    #[test]
    fn cat_cutoff_3() {
        // Every phrase now has ≥ 3 tokens, so words are packed into runs of
        // ≤ 2 tokens: [The cat][sat] [on the][mat .] [It was][happy ,]
        // [and it][purred loudly][.]. The single word `sat` joins [The cat],
        // the single word `.` joins [purred loudly]; then 15 is split off.
        assert_eq!(
            parsing(&pieces(&CAT), 3).unwrap(),
            vec![0, 3, 5, 7, 9, 11, 13, 15]
        );
    }

    #[test]
    fn sentence_starts_are_boundaries() {
        // cutoff larger than the response: each sentence is one macro action
        // (the released code parses sentence by sentence), plus the last
        // token.
        assert_eq!(parsing(&pieces(&CAT), 100).unwrap(), vec![0, 7, 15]);
        // cutoff 1: no constituent is below it, so the walk goes down to
        // single words, which all join the sentence's first word: one macro
        // action per sentence again.
        assert_eq!(parsing(&pieces(&CAT), 1).unwrap(), vec![0, 7, 15]);
    }

    #[test]
    fn single_words_join_the_previous_macro_action() {
        // "Yes\n The big dog barked at me." — `bark`+`ed` is one word of two
        // tokens. Sentences: [Yes \n] (0..2) and 2..10.
        // S1: 2 tokens < 4, one macro action.
        // S2 → phrases [The big dog barked] (2..7, 5 tokens ≥ 4) and
        //   [at me .] (7..10, 3 < 4). The first packs into [The big dog] and
        //   the single word [barked], which joins it: 2..7, 5 tokens, longer
        //   than the cutoff (joins are unbounded, as in the released code).
        // Starts 0, 2, 7, and the last token 9 split off.
        let p = pieces(&[
            "Yes", "Ċ", "ĠThe", "Ġbig", "Ġdog", "Ġbark", "ed", "Ġat", "Ġme", ".",
        ]);
        assert_eq!(parsing(&p, 4).unwrap(), vec![0, 2, 7, 9]);
    }

    #[test]
    fn a_leading_single_word_stands_alone() {
        // "Suddenly the dog barked loudly at the cat." one token per word,
        // cutoff 3: phrases [Suddenly] [the dog barked loudly] [at the cat .].
        // [Suddenly] is a single word with nothing before it in its
        // sentence: its own macro action. The others (4 tokens each) pack
        // into [the dog][barked loudly] and [at the][cat .].
        // Starts 0, 1, 3, 5, 7, and the last token 8.
        let p = pieces(&[
            "Suddenly", "Ġthe", "Ġdog", "Ġbarked", "Ġloudly", "Ġat", "Ġthe", "Ġcat", ".",
        ]);
        assert_eq!(parsing(&p, 3).unwrap(), vec![0, 1, 3, 5, 7, 8]);
        let node = |start, end, single_word| Node {
            start,
            end,
            single_word,
        };
        // Single words after a leading one join it; a later one joins
        // whatever precedes it.
        assert_eq!(
            join_single_words(&[
                node(0, 1, true),
                node(1, 3, true),
                node(3, 5, false),
                node(5, 6, true)
            ]),
            vec![(0, 3), (3, 6)]
        );
    }

    #[test]
    fn starts_fall_on_word_boundaries() {
        use rand::{Rng, SeedableRng};
        let vocab = [
            "Ġthe", "Ġcat", "s", ",", ".", "Ġand", "Ġin", "ing", "Ċ", "Ġ(", ")", "Ġ3", "-", "x",
            "Ġ", "!", "Ġwhich",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for trial in 0..300 {
            let len = rng.random_range(0..60);
            let p: Vec<String> = (0..len)
                .map(|_| vocab[rng.random_range(0..vocab.len())].to_string())
                .collect();
            let word_starts: Vec<usize> = words(&p).iter().map(|w| w.start).collect();
            for cutoff in [1, 2, 3, 5, 8] {
                let starts = parsing(&p, cutoff).unwrap();
                super::super::validate_starts(&starts, len).unwrap();
                for &s in &starts[..starts.len().saturating_sub(1)] {
                    assert!(
                        word_starts.contains(&(s as usize)),
                        "trial {trial}: start {s} splits a word of {p:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_cutoff_is_an_error() {
        let err = parsing(&pieces(&["a"]), 0).unwrap_err().to_string();
        assert_eq!(err, "invalid parser cutoff: must be at least 1");
    }
}
