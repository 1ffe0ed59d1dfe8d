//! Per-column statistics. Everything is computed in one sequential pass over
//! the values so the figures are deterministic and need no extra polars
//! features (each one costs minutes of compile time on CI).

use std::collections::HashSet;

use polars::prelude::*;

/// Above this many values the distinct count of a text column is skipped:
/// the hash set would cost more memory than the report is worth.
pub const DISTINCT_LIMIT: usize = 5_000_000;

/// Summary of numeric values, nulls excluded. Min/max/mean/std also exclude
/// NaN, which is counted on its own so one NaN does not hide the range.
#[derive(Debug, Clone, PartialEq)]
pub struct Numeric {
    /// Values that entered min/max/mean/std.
    pub count: usize,
    pub nan: usize,
    pub min: Option<Extreme>,
    pub max: Option<Extreme>,
    pub mean: Option<f64>,
    /// Sample standard deviation (n − 1), as polars and pandas report it.
    pub std: Option<f64>,
    /// Whether the source dtype is a float type (NaN is only shown for those).
    pub float: bool,
}

/// A minimum or maximum, exact for integers: a u64 id above 2^53 would be
/// misreported as a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Extreme {
    Int(i128),
    Float(f64),
}

/// Lengths of the non-null strings, in chars (not bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub count: usize,
    pub min_chars: usize,
    pub max_chars: usize,
    pub mean_chars: f64,
    pub empty: usize,
    /// `None` when the column exceeds [`DISTINCT_LIMIT`] values.
    pub distinct: Option<usize>,
}

/// Distribution of list lengths over the non-null lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Lengths {
    pub count: usize,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub max: u64,
    pub mean: f64,
    pub empty: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stats {
    /// No non-null value to describe.
    AllNull,
    Numeric(Numeric),
    Text(Text),
    Bool {
        trues: usize,
        falses: usize,
    },
    List {
        lengths: Lengths,
        /// The flattened values, for lists of numbers.
        values: Option<Numeric>,
    },
    /// A dtype this tool does not summarise (struct, date, binary...).
    Unsupported,
}

pub fn column_stats(s: &Series) -> PolarsResult<Stats> {
    if s.len() == s.null_count() {
        return Ok(Stats::AllNull);
    }
    let dtype = s.dtype();
    Ok(if dtype.is_primitive_numeric() {
        Stats::Numeric(numeric(s)?)
    } else if dtype.is_string() {
        Stats::Text(text(s.str()?))
    } else if dtype.is_bool() {
        let ca = s.bool()?;
        let trues = ca.iter().filter(|v| *v == Some(true)).count();
        let falses = ca.iter().filter(|v| *v == Some(false)).count();
        Stats::Bool { trues, falses }
    } else if let DataType::List(inner) = dtype {
        let ca = s.list()?;
        let values = if inner.is_primitive_numeric() {
            let flat = ca.explode(ExplodeOptions {
                empty_as_null: false,
                keep_nulls: false,
            })?;
            Some(numeric(&flat)?)
        } else {
            None
        };
        Stats::List {
            lengths: lengths(ca),
            values,
        }
    } else {
        Stats::Unsupported
    })
}

/// Min/max/mean/std/NaN of a numeric series (nulls skipped).
pub fn numeric(s: &Series) -> PolarsResult<Numeric> {
    let dtype = s.dtype();
    let mut acc = Welford::default();
    let mut nan = 0usize;
    let (mut min, mut max) = (None::<Extreme>, None::<Extreme>);
    if dtype.is_float() {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for v in s.cast(&DataType::Float64)?.f64()?.iter().flatten() {
            if v.is_nan() {
                nan += 1;
                continue;
            }
            lo = lo.min(v);
            hi = hi.max(v);
            acc.push(v);
        }
        if acc.n > 0 {
            min = Some(Extreme::Float(lo));
            max = Some(Extreme::Float(hi));
        }
    } else {
        let mut lo = i128::MAX;
        let mut hi = i128::MIN;
        let mut push = |v: i128| {
            lo = lo.min(v);
            hi = hi.max(v);
            acc.push(v as f64);
        };
        if dtype.is_unsigned_integer() {
            s.cast(&DataType::UInt64)?
                .u64()?
                .iter()
                .flatten()
                .for_each(|v| push(v as i128));
        } else {
            s.cast(&DataType::Int64)?
                .i64()?
                .iter()
                .flatten()
                .for_each(|v| push(v as i128));
        }
        if acc.n > 0 {
            min = Some(Extreme::Int(lo));
            max = Some(Extreme::Int(hi));
        }
    }
    Ok(Numeric {
        count: acc.n,
        nan,
        min,
        max,
        mean: acc.mean(),
        std: acc.sample_std(),
        float: dtype.is_float(),
    })
}

pub fn text(ca: &StringChunked) -> Text {
    let mut count = 0usize;
    let mut total = 0usize;
    let mut min_chars = usize::MAX;
    let mut max_chars = 0usize;
    let mut empty = 0usize;
    let non_null = ca.len() - ca.null_count();
    let mut seen: Option<HashSet<&str>> =
        (non_null <= DISTINCT_LIMIT).then(|| HashSet::with_capacity(non_null));
    for v in ca.iter().flatten() {
        let n = v.chars().count();
        count += 1;
        total += n;
        min_chars = min_chars.min(n);
        max_chars = max_chars.max(n);
        empty += usize::from(n == 0);
        if let Some(seen) = seen.as_mut() {
            seen.insert(v);
        }
    }
    Text {
        count,
        min_chars: if count == 0 { 0 } else { min_chars },
        max_chars,
        mean_chars: if count == 0 {
            0.0
        } else {
            total as f64 / count as f64
        },
        empty,
        distinct: seen.map(|s| s.len()),
    }
}

pub fn lengths(ca: &ListChunked) -> Lengths {
    let mut lens: Vec<u64> = if ca.is_empty() {
        Vec::new()
    } else {
        ca.amortized_iter()
            .flatten()
            .map(|s| s.as_ref().len() as u64)
            .collect()
    };
    lens.sort_unstable();
    let count = lens.len();
    let total: u64 = lens.iter().sum();
    Lengths {
        count,
        min: lens.first().copied().unwrap_or(0),
        p50: percentile(&lens, 50),
        p90: percentile(&lens, 90),
        max: lens.last().copied().unwrap_or(0),
        mean: if count == 0 {
            0.0
        } else {
            total as f64 / count as f64
        },
        empty: lens.iter().take_while(|&&l| l == 0).count(),
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p`% of the values at or below it. Always an observed value, so a
/// length distribution never reports a fractional length.
pub fn percentile(sorted: &[u64], p: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Running mean and variance (Welford), stable for long columns of
/// log-probabilities where the naive sum of squares cancels badly.
#[derive(Default)]
struct Welford {
    n: usize,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    fn sample_std(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [0, 2, 3, 5];
        assert_eq!(percentile(&v, 50), 2);
        assert_eq!(percentile(&v, 90), 5);
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 50), 5);
        assert_eq!(percentile(&ten, 90), 9);
        assert_eq!(percentile(&[7], 90), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn floats_skip_nan_and_null() {
        let s = Series::new(
            "x".into(),
            [Some(1.0f32), None, Some(f32::NAN), Some(3.0), Some(5.0)],
        );
        let n = numeric(&s).unwrap();
        assert_eq!(n.count, 3);
        assert_eq!(n.nan, 1);
        assert_eq!(n.min, Some(Extreme::Float(1.0)));
        assert_eq!(n.max, Some(Extreme::Float(5.0)));
        assert_eq!(n.mean, Some(3.0));
        // Sample variance of 1, 3, 5 is (4 + 0 + 4) / 2 = 4.
        assert_eq!(n.std, Some(2.0));
        assert!(n.float);
    }

    #[test]
    fn large_u64_extremes_stay_exact() {
        let big = (1u64 << 60) + 1;
        let s = Series::new("id".into(), [big, 0]);
        let n = numeric(&s).unwrap();
        assert_eq!(n.max, Some(Extreme::Int(big as i128)));
        assert_eq!(n.min, Some(Extreme::Int(0)));
        assert!(!n.float);
    }

    #[test]
    fn text_counts_chars_not_bytes() {
        let ca = StringChunked::new("t".into(), [Some("héé"), Some(""), None, Some("héé")]);
        let t = text(&ca);
        assert_eq!(t.count, 3);
        assert_eq!((t.min_chars, t.max_chars), (0, 3));
        assert_eq!(t.mean_chars, 2.0);
        assert_eq!(t.empty, 1);
        assert_eq!(t.distinct, Some(2));
    }

    #[test]
    fn all_null_column() {
        let s = Series::new("x".into(), [None::<i64>, None]);
        assert_eq!(column_stats(&s).unwrap(), Stats::AllNull);
    }
}
