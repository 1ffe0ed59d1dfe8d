//! The report: header, schema, statistics, leading rows, laid out as
//! aligned plain text.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use crate::column_stats::{self, Numeric, Stats};
use crate::load::Loaded;
use crate::render;
use crate::Options;

pub fn summarize(path: &Path, loaded: &Loaded, opts: &Options) -> anyhow::Result<String> {
    let df = &loaded.df;
    let mut out = String::new();
    let columns = if df.width() == loaded.file_columns {
        df.width().to_string()
    } else {
        format!("{} of {}", df.width(), loaded.file_columns)
    };
    let header = [
        ("file", path.display().to_string()),
        ("size", render::bytes(loaded.size_bytes)),
        ("rows", df.height().to_string()),
        ("columns", columns),
    ];
    for line in table(&header.map(|(k, v)| vec![k.to_string(), v]), "") {
        writeln!(out, "{line}")?;
    }

    let series: Vec<_> = df
        .columns()
        .iter()
        .map(|c| c.as_materialized_series().clone())
        .collect();

    writeln!(out, "\nschema")?;
    let mut rows = vec![vec!["column".into(), "dtype".into(), "nulls".into()]];
    for s in &series {
        rows.push(vec![
            s.name().to_string(),
            s.dtype().to_string(),
            s.null_count().to_string(),
        ]);
    }
    for line in table(&rows, "  ") {
        writeln!(out, "{line}")?;
    }

    writeln!(
        out,
        "\nstatistics (nulls skipped; NaN counted apart from min/max/mean/std)"
    )?;
    let name_width = series
        .iter()
        .map(|s| s.name().chars().count())
        .max()
        .unwrap_or(0);
    for s in &series {
        let st = column_stats::column_stats(s)
            .with_context(|| format!("cannot summarise column `{}`", s.name()))?;
        let mut lines = describe(&st, s).into_iter();
        let first = lines.next().unwrap_or_default();
        writeln!(out, "  {:<name_width$}  {first}", s.name().as_str())?;
        for more in lines {
            writeln!(out, "  {:<name_width$}  {more}", "")?;
        }
    }

    let shown = opts.rows.min(df.height());
    if shown > 0 {
        if shown == df.height() {
            writeln!(out, "\nall {shown} rows")?;
        } else {
            writeln!(out, "\nfirst {shown} of {} rows", df.height())?;
        }
        for row in 0..shown {
            writeln!(out, "  row {row}")?;
            for s in &series {
                let v = s
                    .get(row)
                    .with_context(|| format!("cannot read row {row} of column `{}`", s.name()))?;
                let cell = render::value(&v, opts.width);
                writeln!(out, "    {:<name_width$}  {cell}", s.name().as_str())?;
            }
        }
    }
    Ok(out)
}

/// The statistics of one column as one or more lines of `key value` pairs.
fn describe(st: &Stats, s: &polars::prelude::Series) -> Vec<String> {
    match st {
        Stats::AllNull => vec!["no non-null values".into()],
        Stats::Numeric(n) => vec![numeric_line(n, true)],
        Stats::Text(t) => {
            let distinct = t.distinct.map(|d| d.to_string()).unwrap_or_else(|| {
                format!("skipped (over {} values)", column_stats::DISTINCT_LIMIT)
            });
            vec![format!(
                "chars min {}  mean {}  max {}  empty {}  distinct {distinct}",
                t.min_chars,
                render::num(t.mean_chars),
                t.max_chars,
                t.empty
            )]
        }
        Stats::Bool { trues, falses } => vec![format!("true {trues}  false {falses}")],
        Stats::List { lengths: l, values } => {
            let mut lines = vec![format!(
                "lengths min {}  p50 {}  p90 {}  max {}  mean {}  empty {}",
                l.min,
                l.p50,
                l.p90,
                l.max,
                render::num(l.mean),
                l.empty
            )];
            if let Some(v) = values {
                lines.push(format!("values  {}", numeric_line(v, false)));
            }
            lines
        }
        Stats::Unsupported => vec![format!("no statistics for dtype {}", s.dtype())],
    }
}

/// `min … max … mean … std … NaN …` for a column; `min … mean … max …`
/// (the order of a range) for flattened list values.
fn numeric_line(n: &Numeric, with_std: bool) -> String {
    let min = n.min.map(render::extreme).unwrap_or_else(|| "-".into());
    let max = n.max.map(render::extreme).unwrap_or_else(|| "-".into());
    let mean = render::opt_num(n.mean);
    let mut line = if with_std {
        format!(
            "min {min}  max {max}  mean {mean}  std {}",
            render::opt_num(n.std)
        )
    } else {
        format!("min {min}  mean {mean}  max {max}")
    };
    if n.float {
        write!(line, "  NaN {}", n.nan).expect("writing to a String");
    }
    line
}

/// Rows of cells padded to aligned columns, each line prefixed by `indent`.
fn table(rows: &[Vec<String>], indent: &str) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = indent.to_string();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_all_but_the_last_column() {
        let rows = vec![
            vec!["a".to_string(), "bbb".to_string(), "c".to_string()],
            vec!["dddd".to_string(), "e".to_string(), "f".to_string()],
        ];
        assert_eq!(table(&rows, "  "), vec!["  a     bbb  c", "  dddd  e    f"]);
    }
}
