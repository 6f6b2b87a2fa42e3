//! Charts for the run report, drawn with `plotters` into SVG: line charts (with error bars),
//! overlaid histograms, grouped bar charts and heat maps. The augmentation preview is real
//! pixels, so [`image_grid`] stays a raster [`Canvas`] encoded as PNG.
//!
//! SVG keeps the text as text (crisp at any zoom, selectable, searchable in the page) and
//! needs no font rasteriser: `plotters` is built without its `ttf` feature, so it estimates
//! text extents for layout and leaves the glyphs to the viewer. Everything is deterministic:
//! the backend writes integer pixel coordinates, tick positions and labels come from
//! [`nice_ticks`] and [`tick_label`] here, and nothing reads the time or a random source, so the
//! same metrics always give byte-identical files — report entries are content-addressed like
//! every other artifact.

use std::path::Path;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Series colours: the Okabe–Ito palette (distinguishable with the common colour-vision
/// deficiencies), its yellow left out (too faint on white).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(80, 80, 80),
];

const INK: RGBColor = RGBColor(34, 34, 34);
const GRID: RGBColor = RGBColor(225, 225, 225);
const MISSING: RGBColor = RGBColor(190, 190, 190);

/// Font sizes in CSS pixels. `plotters`' SVG backend writes `font-size` as the given size
/// divided by 1.24, so [`font`] multiplies it back in.
const TITLE_PX: f64 = 18.0;
const DESC_PX: f64 = 14.0;
const LABEL_PX: f64 = 12.0;

fn font(px: f64) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", px * 1.24).into_font()).color(&INK)
}

/// The plot area of line, histogram and bar charts (a legend panel is added to the right).
const W: u32 = 640;
const H: u32 = 400;

/// A finished chart: an SVG document and its size in pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Svg {
    pub width: u32,
    pub height: u32,
    pub text: String,
}

impl Svg {
    /// Writes the document to `path`.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, &self.text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Draws on a fresh white SVG of `size` with `f` and returns the document.
fn render(
    (width, height): (u32, u32),
    f: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<Svg, String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        f(&root)?;
        root.present().map_err(err)?;
    }
    Ok(Svg {
        width,
        height,
        text,
    })
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing a chart: {e}")
}

/// Round numbers for axis ticks covering [lo, hi]: about `n` of them.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    let mut out = Vec::new();
    let mut t = first;
    while t <= hi + step * 1e-9 {
        // Snap values like 0.30000000000000004.
        out.push((t / step).round() * step);
        t += step;
    }
    out
}

/// A tick label with as many decimals as the step needs.
pub fn tick_label(v: f64, step: f64) -> String {
    // The fewest decimals that write the step exactly (0.025 needs 3).
    let decimals = (0..=6)
        .find(|d| {
            let scaled = step * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(6) as usize;
    // A tick at zero computed as -1e-19 must not print as "-0.0000".
    let v = if v.abs() < step.abs() * 1e-6 { 0.0 } else { v };
    format!("{v:.decimals$}")
}

/// Labelled round-number ticks over [lo, hi].
fn linear_ticks(lo: f64, hi: f64, n: usize) -> Vec<(f64, String)> {
    let ts = nice_ticks(lo, hi, n);
    let step = if ts.len() > 1 { ts[1] - ts[0] } else { 1.0 };
    ts.into_iter().map(|v| (v, tick_label(v, step))).collect()
}

/// A linear axis over [lo, hi] whose ticks (positions and labels) are given, so every label
/// is the one [`tick_label`] (or the caller) wrote, not `plotters`' own float formatting.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (a, b): (i32, i32)) -> i32 {
        let t = if self.hi > self.lo {
            (v - self.lo) / (self.hi - self.lo)
        } else {
            0.5
        };
        a + ((b - a) as f64 * t).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only the bold (labelled) grid lines; no light lines between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.iter().map(|t| t.0).collect()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(v: &f64) -> String {
        v.to_string()
    }

    /// The label of the tick at `v` (the mesh only asks for the positions it was given).
    fn format_ext(&self, v: &f64) -> String {
        self.ticks
            .iter()
            .find(|t| t.0 == *v)
            .map(|t| t.1.clone())
            .unwrap_or_default()
    }
}

fn axis((lo, hi): (f64, f64), ticks: &[(f64, String)]) -> Axis {
    Axis {
        lo,
        hi,
        ticks: ticks.to_vec(),
    }
}

/// One line of a line chart: points in x order, optional ± error per point.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub errors: Option<Vec<f64>>,
}

/// How the x axis is drawn.
#[derive(Debug, Clone)]
pub enum XAxis {
    /// Linear with round-number ticks.
    Linear,
    /// Log10 scale with ticks at the given (x, label) pairs.
    Log(Vec<(f64, String)>),
    /// Linear, with ticks at the given (x, label) pairs (categories).
    Ticks(Vec<(f64, String)>),
}

/// A rough width in pixels of `s` at `px`, a little above the estimate `plotters` lays text out
/// with (no font is loaded to measure it), so labels get room in common sans-serif faces.
fn text_width(s: &str, px: f64) -> u32 {
    (s.chars().count() as f64 * px * 0.6).ceil() as u32
}

/// Width of the legend panel right of the plot for `names` (none for a single series).
fn legend_width(names: &[&str]) -> u32 {
    if names.len() < 2 {
        return 0;
    }
    names
        .iter()
        .map(|n| text_width(n, LABEL_PX))
        .max()
        .unwrap_or(0)
        + 48
}

/// The legend: a swatch and the name of each series, top-down in `area`.
fn legend(area: &DrawingArea<SVGBackend, Shift>, names: &[&str]) -> Result<(), String> {
    if names.len() < 2 {
        return Ok(());
    }
    let style = font(LABEL_PX).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, n) in names.iter().enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        let y = 56 + 20 * i as i32;
        area.draw(&Rectangle::new([(4, y - 3), (24, y + 3)], col.filled()))
            .map_err(err)?;
        area.draw(&Text::new(n.to_string(), (30, y), style.clone()))
            .map_err(err)?;
    }
    Ok(())
}

/// Data range with a margin; a flat range is widened so it still has height.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let d = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        return (lo - d, hi + d);
    }
    let m = (hi - lo) * 0.06;
    (lo - m, hi + m)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Axis, Axis>>;

/// Width of the y label area: the widest tick label, the gap and the rotated axis title.
fn y_area(ticks: &[(f64, String)]) -> u32 {
    ticks
        .iter()
        .map(|t| text_width(&t.1, LABEL_PX))
        .max()
        .unwrap_or(0)
        + 40
}

/// The frame shared by line, histogram and bar charts: title, axes over [x0, x1] × [y0, y1]
/// with the given ticks, light grid lines, axis titles.
#[allow(clippy::too_many_arguments)]
fn frame<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    xt: &[(f64, String)],
    yt: &[(f64, String)],
    x_grid: bool,
) -> Result<Chart<'a, 'b>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(TITLE_PX))
        .margin_top(8)
        .margin_left(8)
        .margin_right(16)
        .margin_bottom(4)
        .x_label_area_size(44)
        .y_label_area_size(y_area(yt))
        .build_cartesian_2d(axis((x0, x1), xt), axis((y0, y1), yt))
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_label)
        .y_desc(y_label)
        .label_style(font(LABEL_PX))
        .axis_desc_style(font(DESC_PX))
        .axis_style(INK)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT);
    if !x_grid {
        mesh.disable_x_mesh();
    }
    mesh.draw().map_err(err)?;
    Ok(chart)
}

/// A line chart of `series` (at least one point among them), markers on each point when
/// there are few, ± error bars where given, a legend when there are several series.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_axis: XAxis,
) -> Result<Svg, String> {
    let log_x = matches!(x_axis, XAxis::Log(_));
    // A log axis is a linear axis over log10(x), with its ticks placed there.
    let tx = |x: f64| if log_x { x.log10() } else { x };
    let finite = |v: &f64| v.is_finite();
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| tx(p.0)))
        .filter(finite)
        .collect();
    let mut ys: Vec<f64> = Vec::new();
    for s in series {
        for (i, p) in s.points.iter().enumerate() {
            let e = s
                .errors
                .as_ref()
                .and_then(|e| e.get(i))
                .copied()
                .unwrap_or(0.0);
            ys.push(p.1 - e);
            ys.push(p.1 + e);
        }
    }
    ys.retain(finite);
    let (mut x0, mut x1) = min_max(&xs);
    if !(x0.is_finite() && x1.is_finite()) {
        (x0, x1) = (0.0, 1.0);
    }
    if log_x {
        let m = 1.3f64.log10();
        (x0, x1) = (x0 - m, x1 + m);
    } else if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    } else {
        // Room for the end markers inside the axes.
        let m = (x1 - x0) * 0.02;
        (x0, x1) = (x0 - m, x1 + m);
    }
    let (y_lo, y_hi) = min_max(&ys);
    let (y0, y1) = padded(y_lo, y_hi);
    let xt: Vec<(f64, String)> = match &x_axis {
        // Whole x values (epochs) get whole ticks: no "1.5" between epochs 1 and 2.
        XAxis::Linear if xs.iter().all(|x| x.fract() == 0.0) => {
            let mut t = linear_ticks(x0, x1, 6);
            t.retain(|t| t.0.fract() == 0.0);
            if t.len() < 2 {
                t = linear_ticks(x0, x1, 6);
            }
            t.into_iter()
                .map(|(v, _)| (v, tick_label(v, 1.0)))
                .collect()
        }
        XAxis::Linear => linear_ticks(x0, x1, 6),
        XAxis::Log(t) | XAxis::Ticks(t) => t.iter().map(|(v, s)| (tx(*v), s.clone())).collect(),
    };
    let yt = linear_ticks(y0, y1, 6);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    render((W + legend_width(&names), H), |root| {
        let (plot, side) = root.split_horizontally(W);
        let mut chart = frame(
            &plot,
            title,
            x_label,
            y_label,
            (x0, x1),
            (y0, y1),
            &xt,
            &yt,
            true,
        )?;
        for (i, s) in series.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|p| (tx(p.0), p.1))
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
                .map_err(err)?;
            if let Some(errors) = &s.errors {
                let bars = s
                    .points
                    .iter()
                    .zip(errors)
                    .map(|(p, e)| (tx(p.0), p.1, *e))
                    .filter(|(x, y, e)| x.is_finite() && y.is_finite() && *e > 0.0);
                // A vertical line over ± e with a cap (about 8 pixels wide) at each end.
                let cap = (x1 - x0) * 0.007;
                let paths = bars.flat_map(|(x, y, e)| {
                    [
                        vec![(x, y - e), (x, y + e)],
                        vec![(x - cap, y - e), (x + cap, y - e)],
                        vec![(x - cap, y + e), (x + cap, y + e)],
                    ]
                });
                chart
                    .draw_series(paths.map(|p| PathElement::new(p, col.stroke_width(1))))
                    .map_err(err)?;
            }
            if pts.len() < 40 {
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, col.filled())))
                    .map_err(err)?;
            }
        }
        legend(&side, &names)
    })
}

/// Overlaid histograms of several groups over shared bins (density, so groups of different
/// sizes compare): each a translucent fill under a step outline.
pub fn histograms(
    title: &str,
    x_label: &str,
    groups: &[(&str, &[f64])],
    bins: usize,
) -> Result<Svg, String> {
    let mut sorted: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.1.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    sorted.sort_by(f64::total_cmp);
    // The central 99 % of all values sets the range (a few far outliers would squash the
    // rest into one bin); values outside land in the edge bins.
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let (lo, hi) = if sorted.is_empty() {
        (0.0, 1.0)
    } else {
        match (q(0.005), q(0.995)) {
            (lo, hi) if hi - lo < 1e-12 => (lo - 0.5, hi + 0.5),
            range => range,
        }
    };
    let bins = bins.max(1);
    let width = (hi - lo) / bins as f64;
    let densities: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, vs)| bin_fractions(vs, lo, width, bins))
        .collect();
    let top = densities
        .iter()
        .flatten()
        .fold(0.0f64, |a, b| a.max(*b))
        .max(1e-12);
    let names: Vec<&str> = groups.iter().map(|g| g.0).collect();
    let (y0, y1) = (0.0, top * 1.08);
    let xt = linear_ticks(lo, hi, 6);
    let yt = linear_ticks(y0, y1, 5);
    render((W + legend_width(&names), H), |root| {
        let (plot, side) = root.split_horizontally(W);
        let mut chart = frame(
            &plot,
            title,
            x_label,
            "fraction of samples",
            (lo, hi),
            (y0, y1),
            &xt,
            &yt,
            true,
        )?;
        let edge = |b: usize| lo + b as f64 * width;
        for (g, h) in densities.iter().enumerate() {
            let col = PALETTE[g % PALETTE.len()];
            chart
                .draw_series(
                    h.iter()
                        .enumerate()
                        .filter(|(_, d)| **d > 0.0)
                        .map(|(b, d)| {
                            Rectangle::new(
                                [(edge(b), *d), (edge(b + 1), 0.0)],
                                col.mix(0.2).filled(),
                            )
                        }),
                )
                .map_err(err)?;
            let mut outline = vec![(lo, 0.0)];
            for (b, d) in h.iter().enumerate() {
                outline.push((edge(b), *d));
                outline.push((edge(b + 1), *d));
            }
            outline.push((hi, 0.0));
            chart
                .draw_series(std::iter::once(PathElement::new(
                    outline,
                    col.stroke_width(2),
                )))
                .map_err(err)?;
        }
        legend(&side, &names)
    })
}

/// The fraction of the finite `values` in each of `bins` bins of `width` from `lo` (values
/// outside fall into the edge bins).
fn bin_fractions(values: &[f64], lo: f64, width: f64, bins: usize) -> Vec<f64> {
    let mut h = vec![0.0; bins];
    let n = values.iter().filter(|v| v.is_finite()).count().max(1) as f64;
    for v in values.iter().filter(|v| v.is_finite()) {
        let b = ((v - lo) / width).clamp(0.0, (bins - 1) as f64) as usize;
        h[b] += 1.0 / n;
    }
    h
}

/// Grouped bars: one group per category, one bar per series (e.g. train and test counts per
/// class), from zero.
pub fn bar_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    categories: &[String],
    series: &[(&str, Vec<f64>)],
) -> Result<Svg, String> {
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let names: Vec<&str> = series.iter().map(|s| s.0).collect();
    // Category labels as ticks at the group centres.
    let xt: Vec<(f64, String)> = categories
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64 + 0.5, n.clone()))
        .collect();
    let (y0, y1) = (0.0, top * 1.08);
    let yt = linear_ticks(y0, y1, 5);
    let x1 = categories.len().max(1) as f64;
    render((W + legend_width(&names), H), |root| {
        let (plot, side) = root.split_horizontally(W);
        let mut chart = frame(
            &plot,
            title,
            x_label,
            y_label,
            (0.0, x1),
            (y0, y1),
            &xt,
            &yt,
            false,
        )?;
        let k = series.len().max(1) as f64;
        for (j, (_, vals)) in series.iter().enumerate() {
            let col = PALETTE[j % PALETTE.len()];
            let bars = vals
                .iter()
                .enumerate()
                .take(categories.len())
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(i, v)| {
                    let a = i as f64 + 0.1 + 0.8 * j as f64 / k;
                    Rectangle::new([(a, *v), (a + 0.8 / k * 0.92, 0.0)], col.filled())
                });
            chart.draw_series(bars).map_err(err)?;
        }
        legend(&side, &names)
    })
}

/// The fill of a heat-map cell for `v` in [0, 1]: white → dark blue; grey when missing.
fn heat_colour(v: f64) -> RGBColor {
    if !v.is_finite() {
        return MISSING;
    }
    let t = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 69.0), lerp(255.0, 148.0))
}

/// A heat map of `values[row][col]` in [0, 1] (white → blue), each cell labelled with its
/// value; NaN cells are grey and say "n/a". Rows run top-down in the given order.
pub fn heat_map(
    title: &str,
    col_title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
) -> Result<Svg, String> {
    const CELL_W: u32 = 88;
    const CELL_H: u32 = 34;
    let (nr, nc) = (rows.len().max(1), cols.len().max(1));
    let label_w = rows
        .iter()
        .map(|r| text_width(r, LABEL_PX))
        .max()
        .unwrap_or(0)
        + 16;
    let width = (label_w + CELL_W * nc as u32 + 24).max(420);
    let height = 44 + 44 + CELL_H * nr as u32 + 8;
    // Row i sits in [nr - i - 1, nr - i], so the first row is on top.
    let xt: Vec<(f64, String)> = cols
        .iter()
        .enumerate()
        .map(|(j, c)| (j as f64 + 0.5, c.clone()))
        .collect();
    let yt: Vec<(f64, String)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| ((nr - i) as f64 - 0.5, r.clone()))
        .collect();
    render((width, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(TITLE_PX))
            .margin_top(8)
            .margin_right(16)
            .x_label_area_size(44)
            .y_label_area_size(label_w)
            .build_cartesian_2d(axis((0.0, nc as f64), &xt), axis((0.0, nr as f64), &yt))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(col_title)
            .label_style(font(LABEL_PX))
            .axis_desc_style(font(DESC_PX))
            .axis_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        let cell = |i: usize, j: usize| {
            values
                .get(i)
                .and_then(|r| r.get(j))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let cells = (0..rows.len()).flat_map(|i| (0..cols.len()).map(move |j| (i, j)));
        let corner = |i: usize, j: usize| {
            let y = (nr - i) as f64;
            ((j as f64, y), (j as f64 + 1.0, y - 1.0))
        };
        chart
            .draw_series(cells.clone().map(|(i, j)| {
                let (a, b) = corner(i, j);
                Rectangle::new([a, b], heat_colour(cell(i, j)).filled())
            }))
            .map_err(err)?;
        chart
            .draw_series(cells.clone().map(|(i, j)| {
                let (a, b) = corner(i, j);
                Rectangle::new([a, b], WHITE.stroke_width(2))
            }))
            .map_err(err)?;
        chart
            .draw_series(cells.map(|(i, j)| {
                let v = cell(i, j);
                let ink: &'static RGBColor = if v.is_finite() && v > 0.55 {
                    &WHITE
                } else {
                    &INK
                };
                let s = if v.is_finite() {
                    format!("{v:.3}")
                } else {
                    "n/a".into()
                };
                let style = font(LABEL_PX)
                    .color(ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                Text::new(s, (j as f64 + 0.5, (nr - i) as f64 - 0.5), style)
            }))
            .map_err(err)?;
        Ok(())
    })
}

/// A width × height RGB image.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// The colour at (x, y).
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut out);
        image::ImageEncoder::write_image(
            enc,
            &self.pixels,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Writes the PNG to `path`.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let bytes = self.png()?;
        std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Grayscale or RGB images (`channels` × `h` × `w`, values 0..=255, channel-major) tiled in
/// rows of `per_row`, each enlarged `scale` times, with a 2-pixel white gap around each.
pub fn image_grid(
    images: &[&[u8]],
    (channels, h, w): (usize, usize, usize),
    per_row: usize,
    scale: usize,
) -> Canvas {
    let per_row = per_row.max(1);
    let rows = images.len().div_ceil(per_row).max(1);
    let (cw, ch) = (w * scale + 2, h * scale + 2);
    let mut c = Canvas::new(2 + cw * per_row, 2 + ch * rows);
    for (k, img) in images.iter().enumerate() {
        let (gx, gy) = (2 + (k % per_row) * cw, 2 + (k / per_row) * ch);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let p = (y / scale) * w + x / scale;
                let px = if channels >= 3 {
                    [img[p], img[h * w + p], img[2 * h * w + p]]
                } else {
                    [img[p]; 3]
                };
                c.set(gx + x, gy + y, px);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every tag is closed in order (the SVG is well-formed as far as tags go)
    /// and returns the elements as (name, attributes text, text content).
    fn elements(svg: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    open.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
            let content = rest[..rest.find('<').unwrap_or(rest.len())]
                .trim()
                .to_string();
            out.push((name.to_string(), attrs.to_string(), content));
            if !self_closing {
                open.push(name.to_string());
            }
        }
        assert!(open.is_empty(), "unclosed elements {open:?}");
        out
    }

    /// The value of attribute `key` in an element's attribute text.
    fn attr(attrs: &str, key: &str) -> Option<String> {
        let pat = format!("{key}=\"");
        let mut from = 0;
        loop {
            let i = attrs[from..].find(&pat)? + from;
            if i == 0 || attrs.as_bytes()[i - 1] == b' ' {
                let v = &attrs[i + pat.len()..];
                return Some(v[..v.find('"')?].to_string());
            }
            from = i + 1;
        }
    }

    fn texts(svg: &str) -> Vec<String> {
        elements(svg)
            .into_iter()
            .filter(|e| e.0 == "text")
            .map(|e| e.2)
            .collect()
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The points of each polyline drawn in `colour`.
    fn polylines(svg: &str, colour: RGBColor) -> Vec<Vec<(i32, i32)>> {
        elements(svg)
            .into_iter()
            .filter(|e| e.0 == "polyline" && attr(&e.1, "stroke") == Some(hex(colour)))
            .map(|e| {
                attr(&e.1, "points")
                    .unwrap()
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn nice_ticks_are_round_and_cover_the_range() {
        let labels = |lo: f64, hi: f64, n: usize| -> Vec<String> {
            let t = nice_ticks(lo, hi, n);
            let step = t[1] - t[0];
            t.iter().map(|v| tick_label(*v, step)).collect()
        };
        assert_eq!(
            labels(0.0, 1.0, 5),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(labels(0.83, 0.97, 5), ["0.85", "0.90", "0.95"]);
        assert_eq!(
            labels(0.08, 0.16, 4),
            ["0.08", "0.10", "0.12", "0.14", "0.16"]
        );
        assert_eq!(
            labels(0.1, 0.2, 4),
            ["0.100", "0.125", "0.150", "0.175", "0.200"]
        );
        assert_eq!(labels(1.0, 40.0, 6), ["10", "20", "30", "40"]);
        assert_eq!(labels(-1500.0, 10.0, 6), ["-1500", "-1000", "-500", "0"]);
        assert_eq!(tick_label(20.0, 10.0), "20");
        assert_eq!(tick_label(-1e-19, 0.0005), "0.0000");
    }

    #[test]
    fn a_line_chart_is_svg_with_its_text_one_line_per_series_and_a_legend() {
        let rising = Series {
            name: "alignment".into(),
            points: vec![(1.0, 0.0), (2.0, 0.5), (3.0, 1.0)],
            errors: None,
        };
        let falling = Series {
            name: "uniformity".into(),
            points: vec![(1.0, 1.0), (2.0, 0.2), (3.0, f64::NAN)],
            errors: None,
        };
        let c = line_chart(
            "Loss & <friends>",
            "epoch",
            "lower is better",
            &[rising.clone(), falling],
            XAxis::Linear,
        )
        .unwrap();
        assert!(c.text.starts_with("<svg "), "{}", &c.text[..80]);
        assert!(c.text.contains("viewBox=\"0 0"));
        assert_eq!(c.height, 400);
        assert!(
            c.width > 640,
            "a legend panel widens the chart: {}",
            c.width
        );
        let t = texts(&c.text);
        for want in [
            "Loss &amp; &lt;friends&gt;",
            "epoch",
            "lower is better",
            "alignment",
            "uniformity",
        ] {
            assert!(t.iter().any(|s| s == want), "no text {want:?} in {t:?}");
        }
        // Tick labels from nice_ticks: whole epochs 1..3 (the x values are whole) and the
        // padded 0..1 y range.
        for want in ["1", "2", "3", "0.0", "0.4", "1.0"] {
            assert!(t.iter().any(|s| s == want), "no tick {want:?} in {t:?}");
        }
        assert!(!t.iter().any(|s| s == "1.5"), "{t:?}");
        // One polyline per series, through its finite points, rising left to right.
        let up = polylines(&c.text, PALETTE[0]);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].len(), 3);
        assert!(
            up[0].windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1),
            "{up:?}"
        );
        let down = polylines(&c.text, PALETTE[1]);
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].len(), 2, "the NaN point is left out");
        // Both series share the axes: the rising line starts where the falling one ends up
        // (y = 0 vs y = 0.2: close), and x = 1 is the same pixel column for both.
        assert_eq!(up[0][0].0, down[0][0].0);
        assert!(down[0][0].1 < up[0][0].1);
        // Markers on the few points.
        let markers = elements(&c.text)
            .into_iter()
            .filter(|e| e.0 == "circle" && attr(&e.1, "fill") == Some(hex(PALETTE[0])))
            .count();
        assert_eq!(markers, 3);
        // A single series has no legend panel.
        let one = line_chart("t", "x", "y", std::slice::from_ref(&rising), XAxis::Linear).unwrap();
        assert_eq!((one.width, one.height), (640, 400));
        // Deterministic: the same data gives the same bytes.
        assert_eq!(
            one,
            line_chart("t", "x", "y", &[rising], XAxis::Linear).unwrap()
        );
    }

    #[test]
    fn a_log_axis_places_the_given_ticks_and_draws_error_bars() {
        let s = Series {
            name: "linear probe".into(),
            points: vec![(1.0, 0.5), (10.0, 0.7), (100.0, 0.9)],
            errors: Some(vec![0.05, 0.02, 0.0]),
        };
        let ticks = vec![
            (1.0, "1%".to_string()),
            (10.0, "10%".to_string()),
            (100.0, "100%".to_string()),
        ];
        let c = line_chart("L", "fraction", "accuracy", &[s], XAxis::Log(ticks)).unwrap();
        let t = texts(&c.text);
        for want in ["1%", "10%", "100%"] {
            assert!(t.iter().any(|s| s == want), "no tick {want:?} in {t:?}");
        }
        // Evenly spaced decades.
        let line = &polylines(&c.text, PALETTE[0])[0];
        let (d1, d2) = (line[1].0 - line[0].0, line[2].0 - line[1].0);
        assert!((d1 - d2).abs() <= 1, "{line:?}");
        // Error bars: a vertical line and two caps for each of the two non-zero errors, the
        // first one 2 × 0.05 high, the second 2 × 0.02.
        let bars: Vec<Vec<(i32, i32)>> = elements(&c.text)
            .into_iter()
            .filter(|e| e.0 == "polyline" && attr(&e.1, "stroke") == Some(hex(PALETTE[0])))
            .filter(|e| attr(&e.1, "stroke-width").as_deref() == Some("1"))
            .map(|e| {
                attr(&e.1, "points")
                    .unwrap()
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect();
        assert_eq!(bars.len(), 6, "{bars:?}");
        let height = |b: &Vec<(i32, i32)>| (b[0].1 - b[1].1).abs();
        let ratio = height(&bars[0]) as f64 / height(&bars[3]) as f64;
        assert!((ratio - 2.5).abs() < 0.1, "{bars:?}");
        assert_eq!(bars[0][0].0, line[0].0, "the bar stands on its point");
    }

    #[test]
    fn histograms_fill_each_nonempty_bin_and_outline_each_group() {
        let a: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let b: Vec<f64> = vec![0.9; 10];
        let c = histograms("OOD score: knn", "score", &[("in", &a), ("ood", &b)], 10).unwrap();
        let els = elements(&c.text);
        let fills = |col: RGBColor| {
            els.iter()
                .filter(|e| e.0 == "rect" && attr(&e.1, "fill") == Some(hex(col)))
                .count()
        };
        // The range is the central 99 %: 0.0..0.99 here, so group a fills all 10 bins and
        // group b (all 0.9) one. The legend swatch adds one rect per group.
        assert_eq!(fills(PALETTE[0]), 10 + 1);
        assert_eq!(fills(PALETTE[1]), 1 + 1);
        let outlines = els
            .iter()
            .filter(|e| e.0 == "polyline" && e.1.contains("stroke-width=\"2\""))
            .map(|e| attr(&e.1, "stroke").unwrap())
            .collect::<Vec<_>>();
        assert_eq!(outlines, [hex(PALETTE[0]), hex(PALETTE[1])]);
        assert!((bin_fractions(&b, 0.0, 0.1, 10)[9] - 1.0).abs() < 1e-9);
        assert!((bin_fractions(&a, 0.0, 0.1, 10).iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(texts(&c.text).iter().any(|t| t == "fraction of samples"));
    }

    #[test]
    fn bar_charts_label_the_categories_and_draw_a_bar_per_positive_value() {
        let c = bar_chart(
            "Class balance",
            "class",
            "samples",
            &["cats".into(), "dogs".into()],
            &[("train", vec![3.0, 5.0]), ("test", vec![1.0, 0.0])],
        )
        .unwrap();
        let t = texts(&c.text);
        for want in [
            "Class balance",
            "class",
            "samples",
            "cats",
            "dogs",
            "train",
            "test",
        ] {
            assert!(t.iter().any(|s| s == want), "no text {want:?} in {t:?}");
        }
        let els = elements(&c.text);
        let bars = |col: RGBColor| {
            els.iter()
                .filter(|e| e.0 == "rect" && attr(&e.1, "fill") == Some(hex(col)))
                .map(|e| attr(&e.1, "height").unwrap().parse::<i32>().unwrap())
                .collect::<Vec<_>>()
        };
        // Swatch (height 6) last; the 5 bar is taller than the 3 bar.
        let train = bars(PALETTE[0]);
        assert_eq!(train.len(), 3, "{train:?}");
        assert!(train[1] > train[0]);
        assert_eq!(bars(PALETTE[1]).len(), 2, "the zero bar is not drawn");
    }

    #[test]
    fn heat_map_cells_darken_with_the_value_and_say_their_value() {
        let c = heat_map(
            "h",
            "severity",
            &["noise".into(), "blur".into()],
            &["1".into(), "2".into()],
            &[vec![0.0, 1.0], vec![0.25]],
        )
        .unwrap();
        let t = texts(&c.text);
        for want in [
            "h", "severity", "noise", "blur", "1", "2", "0.000", "1.000", "0.250", "n/a",
        ] {
            assert!(t.iter().any(|s| s == want), "no text {want:?} in {t:?}");
        }
        let fills: Vec<String> = elements(&c.text)
            .into_iter()
            .filter(|e| e.0 == "rect")
            .filter_map(|e| attr(&e.1, "fill"))
            .collect();
        for v in [0.0, 1.0, 0.25, f64::NAN] {
            assert!(fills.contains(&hex(heat_colour(v))), "no cell for {v}");
        }
        let sum = |c: RGBColor| c.0 as u32 + c.1 as u32 + c.2 as u32;
        assert!(sum(heat_colour(1.0)) < sum(heat_colour(0.25)));
        assert!(sum(heat_colour(0.25)) < sum(heat_colour(0.0)));
        // The first row is on top.
        let y_of = |s: &str| {
            elements(&c.text)
                .into_iter()
                .find(|e| e.0 == "text" && e.2 == s)
                .and_then(|e| attr(&e.1, "y"))
                .unwrap()
                .parse::<i32>()
                .unwrap()
        };
        assert!(y_of("noise") < y_of("blur"));
    }

    #[test]
    fn the_image_grid_keeps_the_pixels() {
        let img: Vec<u8> = (0..4).collect();
        let g = image_grid(&[&img], (1, 2, 2), 1, 2);
        assert_eq!((g.width, g.height), (2 + 6, 2 + 6));
        assert_eq!(g.get(2, 2), [0, 0, 0]);
        assert_eq!(g.get(2 + 3, 2 + 3), [3, 3, 3]);
        assert_eq!(g.get(0, 0), [255, 255, 255]);
        assert!(g.png().unwrap().starts_with(b"\x89PNG"));
    }
}
