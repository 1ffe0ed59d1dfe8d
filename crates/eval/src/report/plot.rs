//! PNG plots drawn with plotters into memory: reward curves over PPO
//! iterations and overlaid score histograms. Text uses an embedded DejaVu
//! Sans subset (assets/), so no system fonts are needed and the pixels are
//! the same on every machine.

use std::sync::Once;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::png::encode_rgb;
use super::{PolicyScores, RewardCurve};

pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 540;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");

/// Tableau's ten colours: distinct, and readable on white.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                // The font is compiled in and known to parse (tested).
                let _ = plotters::style::register_font(family, style, FONT);
            }
        }
    });
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot failed: {e:?}")
}

/// A range around `lo..hi` with a margin, never empty.
fn padded(lo: f64, hi: f64, fraction: f64) -> (f64, f64) {
    if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        let m = (hi - lo) * fraction;
        (lo - m, hi + m)
    }
}

/// Mean reward (y) over PPO iteration (x), one line per run, with a legend:
/// [`band_curves_png`] without bands. Non-finite points are skipped.
pub fn reward_curves_png(curves: &[RewardCurve], title: &str) -> Result<Vec<u8>> {
    let series: Vec<BandSeries> = curves
        .iter()
        .map(|c| BandSeries {
            label: c.run.clone(),
            points: c.points.iter().map(|&(x, y)| (x, y, y, y)).collect(),
        })
        .collect();
    band_curves_png(&series, title, "mean reward (RM score)", "PPO iteration")
}

/// One line with its band: (x, mean, low, high) per point.
#[derive(Clone, Debug, PartialEq)]
pub struct BandSeries {
    pub label: String,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Mean (line) and 95% band (shaded) against x (PPO iterations, or KL),
/// one series per configuration, with a legend. Non-finite points are
/// skipped.
pub fn band_curves_png(
    series: &[BandSeries],
    title: &str,
    y_desc: &str,
    x_desc: &str,
) -> Result<Vec<u8>> {
    let whole_x = x_desc == "PPO iteration";
    let finite: Vec<Vec<(f64, f64, f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|p| {
                    p.0.is_finite() && p.1.is_finite() && p.2.is_finite() && p.3.is_finite()
                })
                .collect()
        })
        .collect();
    let all: Vec<(f64, f64, f64, f64)> = finite.iter().flatten().copied().collect();
    if all.is_empty() {
        bail!("no finite points to plot in {title:?}");
    }
    let (x0, x1) = padded(
        all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max),
        0.02,
    );
    let (y0, y1) = padded(
        all.iter().map(|p| p.2).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.3).fold(f64::NEG_INFINITY, f64::max),
        0.08,
    );
    register_font();
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 26))
            .margin(20)
            .x_label_area_size(56)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(210, 210, 210))
            .x_labels(if whole_x {
                ((x1 - x0).ceil() as usize + 1).clamp(2, 12)
            } else {
                10
            })
            .x_label_formatter(&|x| {
                if !whole_x {
                    format!("{x:.2}")
                } else if (x - x.round()).abs() < 1e-6 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| {
                let span = y1 - y0;
                let y = if y.abs() < span * 1e-3 { 0.0 } else { *y };
                if span < 0.05 {
                    format!("{y:.4}")
                } else {
                    format!("{y:.2}")
                }
            })
            .draw()
            .map_err(plot_err)?;
        // Bands first, so every line stays visible on top of them; a series
        // without spread (one seed, or plain curves) has none.
        for (i, points) in finite.iter().enumerate() {
            if points.len() < 2 || points.iter().all(|p| p.2 == p.3) {
                continue;
            }
            let outline: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.0, p.3))
                .chain(points.iter().rev().map(|p| (p.0, p.2)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(
                    outline,
                    color(i).mix(0.18).filled(),
                )))
                .map_err(plot_err)?;
        }
        for (i, (s, points)) in series.iter().zip(&finite).enumerate() {
            let line = ShapeStyle::from(color(i)).stroke_width(3);
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), line))
                .map_err(plot_err)?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 3, ShapeStyle::from(color(i)).filled())),
                )
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(12)
            .label_font(("sans-serif", 17))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(encode_rgb(WIDTH, HEIGHT, &buf))
}

/// Number of histogram bins for `n` scores: about √n, within 10..=40.
fn bin_count(n: usize) -> usize {
    ((n as f64).sqrt().round() as usize).clamp(10, 40)
}

/// One histogram per policy on shared bins, overlaid with transparency. The
/// y axis is the fraction of the policy's responses, so policies with
/// different sample counts compare fairly. Non-finite scores are skipped.
pub fn score_histograms_png(policies: &[PolicyScores], title: &str) -> Result<Vec<u8>> {
    let finite: Vec<Vec<f64>> = policies
        .iter()
        .map(|p| p.scores.iter().copied().filter(|s| s.is_finite()).collect())
        .collect();
    let all: Vec<f64> = finite.iter().flatten().copied().collect();
    if all.is_empty() {
        bail!("no finite scores to plot");
    }
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let bins = bin_count(finite.iter().map(Vec::len).max().unwrap_or(0));
    let width = (hi - lo) / bins as f64;
    let shares: Vec<Vec<f64>> = finite
        .iter()
        .map(|scores| {
            let mut counts = vec![0usize; bins];
            for s in scores {
                let b = (((s - lo) / width).floor() as usize).min(bins - 1);
                counts[b] += 1;
            }
            let n = scores.len().max(1) as f64;
            counts.into_iter().map(|c| c as f64 / n).collect()
        })
        .collect();
    let top = shares.iter().flatten().copied().fold(0.0, f64::max);
    let (x0, x1) = padded(lo, hi, 0.03);
    register_font();
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 26))
            .margin(20)
            .x_label_area_size(56)
            .y_label_area_size(76)
            .build_cartesian_2d(x0..x1, 0.0..top * 1.12)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("reward model score")
            .y_desc("fraction of responses")
            .label_style(("sans-serif", 16))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(210, 210, 210))
            .x_label_formatter(&|x| format!("{x:.2}"))
            // Avoid "-0.00" at the zero line.
            .y_label_formatter(&|y| format!("{:.2}", if y.abs() < 5e-3 { 0.0 } else { *y }))
            .draw()
            .map_err(plot_err)?;
        for (i, (policy, share)) in policies.iter().zip(&shares).enumerate() {
            let c = color(i);
            let bars = share.iter().enumerate().map(move |(b, &s)| {
                let left = lo + b as f64 * width;
                Rectangle::new([(left, 0.0), (left + width, s)], c.mix(0.35).filled())
            });
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(policy.policy.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 20, y + 6)], c.mix(0.6).filled())
                });
            // A solid outline keeps overlapping histograms apart.
            let mut outline = vec![(lo, 0.0)];
            for (b, &s) in share.iter().enumerate() {
                let left = lo + b as f64 * width;
                outline.push((left, s));
                outline.push((left + width, s));
            }
            outline.push((hi, 0.0));
            chart
                .draw_series(LineSeries::new(
                    outline,
                    ShapeStyle::from(c).stroke_width(2),
                ))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(12)
            .label_font(("sans-serif", 17))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(encode_rgb(WIDTH, HEIGHT, &buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_parses() {
        assert!(plotters::style::register_font("marlhf-test", FontStyle::Normal, FONT).is_ok());
    }

    #[test]
    fn bins_follow_sqrt_rule_within_bounds() {
        assert_eq!(bin_count(0), 10);
        assert_eq!(bin_count(400), 20);
        assert_eq!(bin_count(1_000_000), 40);
    }
}
