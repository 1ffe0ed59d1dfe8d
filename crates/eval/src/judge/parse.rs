//! Reading the choice out of a judge's free-form answer. Judges wrap JSON in
//! code fences, add text after it, write in lowercase or fall back to a
//! "Comparison: ... More helpful: A" layout; all of that is accepted. What
//! cannot be read is reported as `None` (counted as unparseable, never
//! guessed).

use serde_json::Value;

use super::{Choice, JudgeTask};

/// The judge's choice in `raw`, read the way `task`'s template asks for it
/// first, then the other way.
pub fn parse_choice(task: JudgeTask, raw: &str) -> Option<Choice> {
    match task {
        JudgeTask::Summary => last_line_choice(raw).or_else(|| json_choice(raw)),
        JudgeTask::Dialogue | JudgeTask::Qa | JudgeTask::Story => json_choice(raw)
            .or_else(|| keyed_choice(raw))
            .or_else(|| last_line_choice(raw)),
    }
}

/// The `choice` field of the last JSON object in `raw` that has one.
fn json_choice(raw: &str) -> Option<Choice> {
    let mut found = None;
    for (start, _) in raw.match_indices('{') {
        let mut values = serde_json::Deserializer::from_str(&raw[start..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(map))) = values.next() {
            let choice = map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("choice"))
                .and_then(|(_, v)| v.as_str())
                .and_then(token_choice);
            if choice.is_some() {
                found = choice;
            }
        }
    }
    found
}

/// `choice: 'A'`-like text that is not valid JSON (single quotes, trailing
/// commas, a missing brace): the last `choice` key followed by a value.
fn keyed_choice(raw: &str) -> Option<Choice> {
    let lower = raw.to_ascii_lowercase();
    let mut found = None;
    for (at, key) in lower.match_indices("choice") {
        let rest = lower[at + key.len()..].trim_start_matches(['"', '\'', ' ']);
        let Some(value) = rest.strip_prefix(':') else {
            continue;
        };
        let value = value.trim_start_matches([' ', '"', '\'']);
        let word: String = value
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == ' ')
            .collect();
        if let Some(choice) = token_choice(&word) {
            found = Some(choice);
        }
    }
    found
}

/// The choice on the last line that holds nothing but a choice, possibly
/// after a label (`Preferred: A`, `More helpful: **B**`).
fn last_line_choice(raw: &str) -> Option<Choice> {
    raw.lines().rev().find_map(|line| {
        let value = match line.rfind(':') {
            Some(colon) => &line[colon + 1..],
            None => line,
        };
        token_choice(value)
    })
}

/// A single choice token, forgiving case, markdown and punctuation.
fn token_choice(text: &str) -> Option<Choice> {
    let cleaned = text
        .trim()
        .trim_matches(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    '*' | '_'
                        | '`'
                        | '"'
                        | '\''
                        | '['
                        | ']'
                        | '('
                        | ')'
                        | '<'
                        | '>'
                        | '.'
                        | '!'
                        | '#'
                )
        })
        .to_ascii_lowercase();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let core = match words.as_slice() {
        [one] => *one,
        // "Summary A", "Response B", "Answer A", "Assistant B".
        [label, one]
            if matches!(
                *label,
                "summary" | "response" | "answer" | "assistant" | "option"
            ) =>
        {
            *one
        }
        ["equally", _] | ["both", "equal"] => "e",
        _ => return None,
    };
    match core {
        "a" => Some(Choice::A),
        "b" => Some(Choice::B),
        "e" | "equal" | "tie" => Some(Choice::Equal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialogue(raw: &str) -> Option<Choice> {
        parse_choice(JudgeTask::Dialogue, raw)
    }

    fn summary(raw: &str) -> Option<Choice> {
        parse_choice(JudgeTask::Summary, raw)
    }

    #[test]
    fn json_answers() {
        assert_eq!(
            dialogue(r#"{"comparison": "A answers the question directly.", "choice": "A"}"#),
            Some(Choice::A)
        );
        let fenced = "```json\n{\n  \"comparison\": \"Response B is more specific.\",\n  \"choice\": \"B\"\n}\n```";
        assert_eq!(dialogue(fenced), Some(Choice::B));
        let trailing = "{\"comparison\": \"Both are fine.\", \"choice\": \"E\"}\n\nLet me know if you need more detail.";
        assert_eq!(dialogue(trailing), Some(Choice::Equal));
        assert_eq!(
            dialogue(r#"{"comparison": "...", "choice": "b"}"#),
            Some(Choice::B)
        );
        assert_eq!(
            dialogue(r#"{"Comparison": "...", "Choice": "Response A"}"#),
            Some(Choice::A)
        );
        // Braces inside the comparison text do not confuse it.
        assert_eq!(
            dialogue(r#"{"comparison": "A shows {code} but B does not", "choice": "A"}"#),
            Some(Choice::A)
        );
        // The last object with a choice is the answer.
        let echo = "The format is {\"comparison\": \"...\", \"choice\": \"A\"}.\nMy verdict: {\"comparison\": \"B is safer.\", \"choice\": \"B\"}";
        assert_eq!(dialogue(echo), Some(Choice::B));
        assert_eq!(
            parse_choice(JudgeTask::Qa, r#"{"comparison": "tie", "choice": "tie"}"#),
            Some(Choice::Equal)
        );
    }

    #[test]
    fn almost_json_answers() {
        assert_eq!(
            dialogue("{'comparison': 'B is wrong', 'choice': 'A'}"),
            Some(Choice::A)
        );
        assert_eq!(
            dialogue("{\"comparison\": \"B cites a source\", \"choice\": \"B\",}"),
            Some(Choice::B)
        );
        assert_eq!(dialogue("{\"comparison\": \"cut off"), None);
    }

    #[test]
    fn line_answers() {
        assert_eq!(
            dialogue("Comparison: Response A is vague while B gives steps.\nMore helpful: B"),
            Some(Choice::B)
        );
        assert_eq!(
            summary("Summary A misses the main question; B keeps it.\nB"),
            Some(Choice::B)
        );
        assert_eq!(
            summary("Both capture the post equally well.\n\nE"),
            Some(Choice::Equal)
        );
        assert_eq!(summary("A is more concise.\na\n"), Some(Choice::A));
        assert_eq!(
            summary("Comparison: ...\nPreferred: **A**"),
            Some(Choice::A)
        );
        assert_eq!(
            summary("Reasoning...\nFinal answer: [[B]]."),
            Some(Choice::B)
        );
        assert_eq!(summary("Reasoning...\nSummary B"), Some(Choice::B));
        // A trailing remark after the verdict line.
        assert_eq!(summary("Analysis.\nA\nI hope this helps!"), Some(Choice::A));
    }

    #[test]
    fn unparseable_answers() {
        assert_eq!(summary("Both summaries have merits and flaws."), None);
        assert_eq!(summary("A is better than B in coherence"), None);
        assert_eq!(dialogue("I cannot decide between them."), None);
        assert_eq!(dialogue(""), None);
        assert_eq!(dialogue(r#"{"comparison": "x", "choice": "C"}"#), None);
    }
}
