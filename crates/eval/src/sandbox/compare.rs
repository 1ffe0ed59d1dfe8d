//! Deciding whether a program's output matches the expected one, the way the
//! APPS harness (`testing_util.py`) decides it: exact text is not required,
//! whitespace and float formatting are forgiven.

use serde_json::Value;

/// np.allclose's defaults, which the APPS harness uses for numeric output.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-8;

/// Standard-output problems. Passes when any of these agree:
/// 1. the lines, each trimmed, with blank lines dropped;
/// 2. the whitespace-separated tokens;
/// 3. the tokens, where pairs that both parse as numbers may differ by
///    `1e-8 + 1e-5·|expected|`.
///
/// APPS also tries comparing lines as unordered sets of tokens; that accepts
/// wrong answers (any permutation of a line), so it is left out.
pub fn stdout_matches(actual: &str, expected: &str) -> bool {
    let lines = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    if lines(actual) == lines(expected) {
        return true;
    }
    let got: Vec<&str> = actual.split_whitespace().collect();
    let want: Vec<&str> = expected.split_whitespace().collect();
    if got == want {
        return true;
    }
    got.len() == want.len()
        && got
            .iter()
            .zip(&want)
            .all(|(g, w)| g == w || numbers_close(g, w))
}

fn numbers_close(got: &str, want: &str) -> bool {
    match (got.parse::<f64>(), want.parse::<f64>()) {
        (Ok(g), Ok(w)) if g.is_finite() && w.is_finite() => (g - w).abs() <= ATOL + RTOL * w.abs(),
        _ => false,
    }
}

/// Call-based problems. APPS stores most expected values wrapped in a
/// one-element list (`[[False], [True]]`) but some bare (`[9]`), so a result
/// matches the expected value itself or, failing that, its only element.
pub fn value_matches(actual: &Value, expected: &Value) -> bool {
    if values_equal(actual, expected) {
        return true;
    }
    match expected {
        Value::Array(items) if items.len() == 1 => values_equal(actual, &items[0]),
        _ => false,
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            // Integers compare exactly: 10^18 and 10^18 + 1 are the same f64.
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= ATOL + RTOL * y.abs(),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stdout_forgives_whitespace_and_blank_lines() {
        assert!(stdout_matches("1\n6\n-1\n", "1\n6\n-1\n"));
        assert!(stdout_matches("1 \r\n6\n\n-1", "1\n6\n-1\n"));
        assert!(stdout_matches("1 2  3\n", "1 2 3"));
        // Tokens may be split across lines differently.
        assert!(stdout_matches("1\n2\n3\n", "1 2 3\n"));
        assert!(!stdout_matches("1\n6\n1\n", "1\n6\n-1\n"));
        assert!(!stdout_matches("1\n6\n", "1\n6\n-1\n"));
        assert!(!stdout_matches("", "0\n"));
        // Case matters, as in APPS.
        assert!(!stdout_matches("yes\n", "YES\n"));
    }

    #[test]
    fn stdout_compares_numbers_with_tolerance() {
        assert!(stdout_matches("0.3333333\n", "0.33333333333\n"));
        assert!(stdout_matches("2.0 5\n", "2 5.000000\n"));
        assert!(stdout_matches("1e-9\n", "0\n"));
        assert!(!stdout_matches("0.334\n", "0.3333333\n"));
        assert!(!stdout_matches("nan\n", "nan1\n"));
        assert!(!stdout_matches("inf\n", "inf0\n"));
    }

    #[test]
    fn call_results_unwrap_apps_lists() {
        assert!(value_matches(&json!(false), &json!([false])));
        assert!(value_matches(&json!(9), &json!(9)));
        assert!(value_matches(&json!([1, 2]), &json!([[1, 2]])));
        assert!(value_matches(&json!([1, 2]), &json!([1, 2])));
        assert!(!value_matches(&json!([1, 2]), &json!([[2, 1]])));
        assert!(!value_matches(&json!(true), &json!([false])));
        assert!(!value_matches(&json!(1), &json!([1, 1])));
        assert!(value_matches(&json!(0.1 + 0.2), &json!(0.3)));
        assert!(!value_matches(
            &json!(1_000_000_000_000_000_001u64),
            &json!(1_000_000_000_000_000_000u64)
        ));
        assert!(value_matches(
            &json!({"a": [1, "x"]}),
            &json!([{"a": [1.0, "x"]}])
        ));
        assert!(!value_matches(&json!("1"), &json!(1)));
    }
}
