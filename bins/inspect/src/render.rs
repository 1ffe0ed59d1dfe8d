//! Turning values into short, one-line text for a terminal.

use polars::prelude::*;

use crate::column_stats::Extreme;

/// A number with at most 6 significant digits and no trailing zeros:
/// `1.5`, `-0.693147`, `12`, `1.23457e-7`. Reports are read, not parsed.
pub fn num(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-5..15).contains(&mag) {
        let s = format!("{x:.5e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    let prec = (5 - mag).max(0) as usize;
    trim_zeros(&format!("{x:.prec$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

pub fn extreme(e: Extreme) -> String {
    match e {
        Extreme::Int(v) => v.to_string(),
        Extreme::Float(v) => num(v),
    }
}

pub fn opt_num(x: Option<f64>) -> String {
    x.map(num).unwrap_or_else(|| "-".into())
}

/// `12.3 KiB (12594 bytes)`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {} ({n} bytes)", UNITS[unit])
}

/// Text on one line of at most `width` chars: line breaks become `⏎`, tabs
/// `⇥`, other control characters `·`, and an overlong middle becomes `…`
/// so both the start and the end (often the interesting part of a
/// response) stay visible.
pub fn shorten(text: &str, width: usize) -> String {
    let mut chars: Vec<char> = Vec::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        chars.push(match c {
            '\r' => {
                if it.peek() == Some(&'\n') {
                    it.next();
                }
                '⏎'
            }
            '\n' => '⏎',
            '\t' => '⇥',
            c if c.is_control() => '·',
            c => c,
        });
    }
    if chars.len() <= width {
        return chars.into_iter().collect();
    }
    let keep = width.saturating_sub(1);
    let tail = keep / 2;
    let head = keep - tail;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// A list of `total` items, of which `items` are the leading ones rendered,
/// as `[a, b, c]`, or `[a, b, … (n items)]` when that would exceed `width`
/// chars or not every item was rendered: as many leading items as fit, then
/// the count.
pub fn list(items: &[String], total: usize, width: usize) -> String {
    if items.len() == total {
        let full = format!("[{}]", items.join(", "));
        if full.chars().count() <= width {
            return full;
        }
    }
    let suffix = format!("… ({total} items)]");
    let budget = width.saturating_sub(suffix.chars().count());
    let mut out = String::from("[");
    let mut used = 1;
    for item in items {
        let n = item.chars().count() + 2; // the item and its ", "
        if used + n > budget {
            break;
        }
        out.push_str(item);
        out.push_str(", ");
        used += n;
    }
    out.push_str(&suffix);
    out
}

/// One cell of the row preview. Strings are shown bare (an empty one as
/// `""`), nulls as `null`, nested lists recursively.
pub fn value(v: &AnyValue, width: usize) -> String {
    match v {
        AnyValue::String(s) => text_cell(s, width),
        AnyValue::StringOwned(s) => text_cell(s, width),
        AnyValue::List(s) => list_cell(s, width),
        other => shorten(&scalar(other), width),
    }
}

fn text_cell(s: &str, width: usize) -> String {
    if s.is_empty() {
        "\"\"".into()
    } else {
        shorten(s, width)
    }
}

fn list_cell(s: &Series, width: usize) -> String {
    // Each shown item takes at least three chars with its separator, so
    // rendering more than width / 3 + 1 of them is wasted work on long lists.
    let take = s.len().min(width / 3 + 1);
    let items: Vec<String> = (0..take)
        .map(|i| match s.get(i) {
            // Items inside a list are quoted so separators stay readable.
            Ok(AnyValue::String(t)) => format!("\"{}\"", shorten(t, width / 2)),
            Ok(AnyValue::StringOwned(t)) => format!("\"{}\"", shorten(&t, width / 2)),
            Ok(v) => value(&v, width / 2),
            Err(_) => "?".into(),
        })
        .collect();
    list(&items, s.len(), width)
}

fn scalar(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => "null".into(),
        AnyValue::Boolean(b) => b.to_string(),
        AnyValue::Float32(x) => num(*x as f64),
        AnyValue::Float64(x) => num(*x),
        AnyValue::Binary(b) => format!("<{} bytes>", b.len()),
        AnyValue::BinaryOwned(b) => format!("<{} bytes>", b.len()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_six_significant_digits() {
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(12.0), "12");
        assert_eq!(num(-std::f64::consts::LN_2), "-0.693147");
        assert_eq!(num(2.0 / 3.0), "0.666667");
        assert_eq!(num(1234567.0), "1234567");
        assert_eq!(num(1.234567e-7), "1.23457e-7");
        assert_eq!(num(2e20), "2e20");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(num(0.1f32 as f64), "0.1");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(bytes(3 << 20), "3.0 MiB (3145728 bytes)");
    }

    #[test]
    fn shorten_elides_the_middle_and_shows_newlines() {
        assert_eq!(shorten("a\nb\r\nc\td", 80), "a⏎b⏎c⇥d");
        assert_eq!(shorten("abcdefghij", 10), "abcdefghij");
        // 7 chars: 4 from the start, the ellipsis, 3 from the end.
        assert_eq!(shorten("abcdefghijk", 8), "abcd…ijk");
        assert_eq!(shorten("ééééééééééé", 4), "éé…é");
    }

    #[test]
    fn lists_keep_leading_items_that_fit() {
        let items: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
        assert_eq!(list(&items, 10, 80), "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]");
        assert_eq!(list(&items, 10, 20), "[1, 2, … (10 items)]");
        assert_eq!(list(&items, 10, 19), "[1, … (10 items)]");
        assert_eq!(list(&[], 0, 80), "[]");
    }

    #[test]
    fn list_cells_count_all_items_even_unrendered_ones() {
        let s = Series::new("x".into(), (0u32..1000).collect::<Vec<_>>());
        assert_eq!(list_cell(&s, 24), "[0, 1, … (1000 items)]");
    }
}
