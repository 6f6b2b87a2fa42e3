//! Small raster charts for the run report: line charts (with error bars), overlaid histograms,
//! heat maps and image grids, drawn into RGB buffers and encoded as PNG.
//!
//! Hand-drawn on purpose: the report needs four chart shapes, and a plotting library would
//! bring font rendering (and its compile time) for them. Text uses the public-domain 8×8
//! bitmap font of the `font8x8` crate. Everything is deterministic (no time, no randomness),
//! so the same metrics always give byte-identical PNGs — report entries are content-addressed
//! like every other artifact.

use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;

/// An RGB colour.
pub type Rgb = [u8; 3];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [120, 120, 120];
const GRID: Rgb = [228, 228, 228];

/// Series colours (a colour-blind-friendly categorical palette).
pub const PALETTE: [Rgb; 8] = [
    [0, 114, 178],
    [230, 159, 0],
    [0, 158, 115],
    [204, 121, 167],
    [86, 180, 233],
    [213, 94, 0],
    [240, 228, 66],
    [80, 80, 80],
];

/// A width × height RGB image.
#[derive(Debug, Clone)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// The colour at (x, y).
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A filled rectangle (clipped).
    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// A line `thick` pixels wide (Bresenham, with a square brush).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), thick: i64, c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        let off = thick / 2;
        loop {
            self.rect(x - off, y - off, thick, thick, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text with its top-left corner at (x, y), each font pixel `scale` × `scale`.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        for (i, ch) in s.chars().enumerate() {
            let glyph = BASIC_LEGACY[glyph_index(ch)];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        let gx = x + (i as i64 * 8 + col) * scale;
                        self.rect(gx, y + row as i64 * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    /// Text rotated a quarter turn anticlockwise (reading upwards), its bottom-left at (x, y).
    pub fn text_up(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        for (i, ch) in s.chars().enumerate() {
            let glyph = BASIC_LEGACY[glyph_index(ch)];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.set(x + row as i64, y - (i as i64 * 8 + col), c);
                    }
                }
            }
        }
    }

    /// Text centred horizontally on `cx`.
    pub fn text_centered(&mut self, cx: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        let w = text_width(s) * scale;
        self.text(cx - w / 2, y, s, scale, c);
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

fn glyph_index(ch: char) -> usize {
    let c = ch as usize;
    if (32..127).contains(&c) {
        c
    } else {
        b'?' as usize
    }
}

/// Width in pixels of `s` at scale 1.
pub fn text_width(s: &str) -> i64 {
    s.chars().count() as i64 * 8
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

const W: usize = 640;
const H: usize = 400;
const LEFT: i64 = 84;
const RIGHT: i64 = 20;
const TOP: i64 = 40;
const BOTTOM: i64 = 50;

/// Plot frame: maps data coordinates to pixels and draws axes, grid and labels.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    log_x: bool,
}

/// A canvas 640 wide plus the legend panel, so a legend never narrows the plot.
fn canvas_for(right: i64) -> Canvas {
    Canvas::new(W + (right - RIGHT).max(0) as usize, H)
}

impl Frame {
    fn px(&self, x: f64) -> i64 {
        let (x, a, b) = if self.log_x {
            (x.log10(), self.x0.log10(), self.x1.log10())
        } else {
            (x, self.x0, self.x1)
        };
        let t = if b > a { (x - a) / (b - a) } else { 0.5 };
        LEFT + (t * (W as i64 - LEFT - RIGHT) as f64).round() as i64
    }
    fn py(&self, y: f64) -> i64 {
        let t = if self.y1 > self.y0 {
            (y - self.y0) / (self.y1 - self.y0)
        } else {
            0.5
        };
        H as i64 - BOTTOM - (t * (H as i64 - TOP - BOTTOM) as f64).round() as i64
    }

    fn draw(&self, c: &mut Canvas, title: &str, x_label: &str, y_label: &str, x_axis: &XAxis) {
        let (l, r, t, b) = (LEFT, W as i64 - RIGHT, TOP, H as i64 - BOTTOM);
        let yt = nice_ticks(self.y0, self.y1, 5);
        let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
        for v in &yt {
            let y = self.py(*v);
            c.line((l, y), (r, y), 1, GRID);
            let s = tick_label(*v, ystep);
            c.text(l - 6 - text_width(&s), y - 4, &s, 1, BLACK);
        }
        let xt: Vec<(f64, String)> = match x_axis {
            XAxis::Linear => {
                let ts = nice_ticks(self.x0, self.x1, 6);
                let step = if ts.len() > 1 { ts[1] - ts[0] } else { 1.0 };
                ts.into_iter().map(|v| (v, tick_label(v, step))).collect()
            }
            XAxis::Log(ticks) | XAxis::Ticks(ticks) => ticks.clone(),
        };
        for (v, s) in &xt {
            let x = self.px(*v);
            c.line((x, t), (x, b), 1, GRID);
            c.line((x, b), (x, b + 4), 1, BLACK);
            c.text_centered(x, b + 8, s, 1, BLACK);
        }
        c.line((l, b), (r, b), 1, BLACK);
        c.line((l, t), (l, b), 1, BLACK);
        c.text_centered(c.width as i64 / 2, 12, title, 2, BLACK);
        c.text_centered((l + r) / 2, H as i64 - 18, x_label, 1, BLACK);
        let mid = (t + b) / 2 + text_width(y_label) / 2;
        c.text_up(4, mid, y_label, BLACK);
    }
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

/// Width of the legend panel for `names` (0 without a legend).
fn legend_width(names: &[&str]) -> i64 {
    if names.len() < 2 {
        return RIGHT;
    }
    names.iter().map(|n| text_width(n)).max().unwrap_or(0) + 28 + 2 * RIGHT
}

/// The legend, in the panel right of the plot area.
fn legend(c: &mut Canvas, names: &[&str]) {
    if names.len() < 2 {
        return;
    }
    let x = W as i64;
    let mut y = TOP + 6;
    for (i, n) in names.iter().enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        c.rect(x, y + 2, 18, 4, col);
        c.text(x + 24, y, n, 1, BLACK);
        y += 14;
    }
}

/// A line chart of `series` (at least one point among them).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    x_axis: XAxis,
) -> Canvas {
    let finite = |v: &f64| v.is_finite();
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(finite)
        .collect();
    let mut ys: Vec<f64> = Vec::new();
    for s in series {
        for (i, p) in s.points.iter().enumerate() {
            let e = s.errors.as_ref().map_or(0.0, |e| e[i]);
            ys.push(p.1 - e);
            ys.push(p.1 + e);
        }
    }
    ys.retain(finite);
    let (mut x0, mut x1) = min_max(&xs);
    let log_x = matches!(x_axis, XAxis::Log(_));
    if log_x {
        (x0, x1) = (x0 / 1.3, x1 * 1.3);
    } else if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let (y_lo, y_hi) = min_max(&ys);
    let (y0, y1) = padded(y_lo, y_hi);
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    let f = Frame {
        x0,
        x1,
        y0,
        y1,
        log_x,
    };
    let mut c = canvas_for(legend_width(&names));
    f.draw(&mut c, title, x_label, y_label, &x_axis);
    for (i, s) in series.iter().enumerate() {
        let col = PALETTE[i % PALETTE.len()];
        let pts: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|p| (f.px(p.0), f.py(p.1)))
            .collect();
        for w in pts.windows(2) {
            c.line(w[0], w[1], 2, col);
        }
        for (k, p) in s.points.iter().enumerate() {
            if !(p.0.is_finite() && p.1.is_finite()) {
                continue;
            }
            let (x, y) = (f.px(p.0), f.py(p.1));
            if let Some(e) = s.errors.as_ref().map(|e| e[k]).filter(|e| *e > 0.0) {
                let (ya, yb) = (f.py(p.1 - e), f.py(p.1 + e));
                c.line((x, ya), (x, yb), 1, col);
                c.line((x - 4, ya), (x + 4, ya), 1, col);
                c.line((x - 4, yb), (x + 4, yb), 1, col);
            }
            if pts.len() < 40 {
                c.rect(x - 3, y - 3, 7, 7, col);
            }
        }
    }
    legend(&mut c, &names);
    c
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

/// Overlaid histograms of several groups over shared bins, as outlined bars (density, so
/// groups of different sizes compare).
pub fn histograms(title: &str, x_label: &str, groups: &[(&str, &[f64])], bins: usize) -> Canvas {
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
        .map(|(_, vs)| {
            let mut h = vec![0.0; bins];
            let n = vs.iter().filter(|v| v.is_finite()).count().max(1) as f64;
            for v in vs.iter().filter(|v| v.is_finite()) {
                let b = ((v - lo) / width).clamp(0.0, (bins - 1) as f64) as usize;
                h[b] += 1.0 / n;
            }
            h
        })
        .collect();
    let top = densities
        .iter()
        .flatten()
        .fold(0.0f64, |a, b| a.max(*b))
        .max(1e-12);
    let names: Vec<&str> = groups.iter().map(|g| g.0).collect();
    let f = Frame {
        x0: lo,
        x1: hi,
        y0: 0.0,
        y1: top * 1.08,
        log_x: false,
    };
    let mut c = canvas_for(legend_width(&names));
    f.draw(
        &mut c,
        title,
        x_label,
        "fraction of samples",
        &XAxis::Linear,
    );
    for (g, h) in densities.iter().enumerate() {
        let col = PALETTE[g % PALETTE.len()];
        let light = tint(col);
        for (b, d) in h.iter().enumerate() {
            if *d <= 0.0 {
                continue;
            }
            let (xa, xb) = (
                f.px(lo + b as f64 * width),
                f.px(lo + (b + 1) as f64 * width),
            );
            let (ya, yb) = (f.py(*d), f.py(0.0));
            if g == 0 {
                c.rect(xa, ya, (xb - xa).max(1), yb - ya, light);
            }
            c.line((xa, ya), (xb, ya), 2, col);
            c.line((xa, ya), (xa, yb), 1, col);
            c.line((xb, ya), (xb, yb), 1, col);
        }
    }
    legend(&mut c, &names);
    c
}

fn tint(c: Rgb) -> Rgb {
    c.map(|v| (v as u16 + (255 - v as u16) * 3 / 4) as u8)
}

/// Grouped bars: one group per category, one bar per series (e.g. train and test counts per
/// class), from zero.
pub fn bar_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    categories: &[String],
    series: &[(&str, Vec<f64>)],
) -> Canvas {
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let names: Vec<&str> = series.iter().map(|s| s.0).collect();
    let f = Frame {
        x0: 0.0,
        x1: categories.len().max(1) as f64,
        y0: 0.0,
        y1: top * 1.08,
        log_x: false,
    };
    let mut c = canvas_for(legend_width(&names));
    // Category labels as ticks at the group centres.
    let ticks: Vec<(f64, String)> = categories
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64 + 0.5, n.clone()))
        .collect();
    f.draw(&mut c, title, x_label, y_label, &XAxis::Ticks(ticks));
    let k = series.len().max(1) as f64;
    for (j, (_, vals)) in series.iter().enumerate() {
        let col = PALETTE[j % PALETTE.len()];
        for (i, v) in vals.iter().enumerate().take(categories.len()) {
            if !v.is_finite() || *v <= 0.0 {
                continue;
            }
            let x0 = i as f64 + 0.1 + 0.8 * j as f64 / k;
            let x1 = x0 + 0.8 / k;
            let (xa, xb) = (f.px(x0), f.px(x1));
            let (ya, yb) = (f.py(*v), f.py(0.0));
            c.rect(xa, ya, (xb - xa - 1).max(1), yb - ya, col);
        }
    }
    legend(&mut c, &names);
    c
}

/// A heat map of `values[row][col]` in [0, 1] (white → blue), each cell labelled with its
/// value; NaN cells stay grey.
pub fn heat_map(
    title: &str,
    col_title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
) -> Canvas {
    let label_w = rows.iter().map(|r| text_width(r)).max().unwrap_or(0) + 16;
    let cell_w = 64i64;
    let cell_h = 22i64;
    let width = (label_w + cell_w * cols.len() as i64 + 20).max(360) as usize;
    let height = (TOP + 24 + cell_h * rows.len() as i64 + 20) as usize;
    let mut c = Canvas::new(width, height);
    c.text_centered(width as i64 / 2, 12, title, 2, BLACK);
    let y0 = TOP + 24;
    c.text_centered(
        label_w + cell_w * cols.len() as i64 / 2,
        y0 - 28,
        col_title,
        1,
        GREY,
    );
    for (j, col) in cols.iter().enumerate() {
        c.text_centered(
            label_w + cell_w * j as i64 + cell_w / 2,
            y0 - 14,
            col,
            1,
            BLACK,
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = y0 + cell_h * i as i64;
        c.text(8, y + cell_h / 2 - 4, row, 1, BLACK);
        for j in 0..cols.len() {
            let v = values
                .get(i)
                .and_then(|r| r.get(j))
                .copied()
                .unwrap_or(f64::NAN);
            let x = label_w + cell_w * j as i64;
            let fill = if v.is_finite() {
                let t = v.clamp(0.0, 1.0);
                let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
                [lerp(247.0, 8.0), lerp(251.0, 69.0), lerp(255.0, 148.0)]
            } else {
                GREY
            };
            c.rect(x, y, cell_w - 1, cell_h - 1, fill);
            let ink = if v.is_finite() && v > 0.55 {
                WHITE
            } else {
                BLACK
            };
            let s = if v.is_finite() {
                format!("{v:.3}")
            } else {
                "n/a".into()
            };
            c.text_centered(x + cell_w / 2, y + cell_h / 2 - 4, &s, 1, ink);
        }
    }
    c
}

/// Grayscale or RGB images (`channels` × `h` × `w`, values 0..=255, channel-major) tiled in
/// rows of `per_row`, each enlarged `scale` times, with a 2-pixel gap; `row_labels` name each
/// row on the left.
pub fn image_grid(
    images: &[&[u8]],
    (channels, h, w): (usize, usize, usize),
    per_row: usize,
    scale: usize,
    row_labels: &[String],
) -> Canvas {
    let per_row = per_row.max(1);
    let rows = images.len().div_ceil(per_row).max(1);
    let label_w = row_labels.iter().map(|r| text_width(r)).max().unwrap_or(0) as usize;
    let label_w = if label_w > 0 { label_w + 12 } else { 2 };
    let (cw, ch) = (w * scale + 2, h * scale + 2);
    let mut c = Canvas::new(label_w + cw * per_row, 2 + ch * rows);
    for (k, img) in images.iter().enumerate() {
        let (gx, gy) = (label_w + (k % per_row) * cw, 2 + (k / per_row) * ch);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let p = (y / scale) * w + x / scale;
                let px = if channels >= 3 {
                    [img[p], img[h * w + p], img[2 * h * w + p]]
                } else {
                    [img[p]; 3]
                };
                c.set((gx + x) as i64, (gy + y) as i64, px);
            }
        }
    }
    for (r, l) in row_labels.iter().enumerate().take(rows) {
        c.text(4, (2 + r * ch + ch / 2) as i64 - 4, l, 1, BLACK);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn text_sets_the_glyph_pixels_only() {
        let mut c = Canvas::new(16, 8);
        c.text(0, 0, "|", 1, BLACK);
        let ink = (0..8)
            .flat_map(|y| (0..16).map(move |x| (x, y)))
            .filter(|&(x, y)| c.get(x, y) == BLACK)
            .count();
        // The bar glyph is one or two columns over most of the cell height.
        assert!((6..=16).contains(&ink), "{ink}");
        assert!((8..16).all(|x| (0..8).all(|y| c.get(x, y) == WHITE)));
    }

    #[test]
    fn a_rising_series_is_drawn_from_bottom_left_to_top_right() {
        let s = Series {
            name: "loss".into(),
            points: vec![(1.0, 0.0), (2.0, 1.0)],
            errors: None,
        };
        let c = line_chart("t", "x", "y", &[s], XAxis::Linear);
        let col = PALETTE[0];
        let hits: Vec<(usize, usize)> = (0..c.height)
            .flat_map(|y| (0..c.width).map(move |x| (x, y)))
            .filter(|&(x, y)| c.get(x, y) == col)
            .collect();
        let left = hits.iter().min_by_key(|p| p.0).unwrap();
        let right = hits.iter().max_by_key(|p| p.0).unwrap();
        assert!(
            left.1 > right.1,
            "left end {left:?} should be lower than {right:?}"
        );
        assert!(c.png().unwrap().starts_with(b"\x89PNG"));
    }

    #[test]
    fn heat_map_cells_darken_with_the_value_and_the_grid_keeps_pixels() {
        let c = heat_map(
            "h",
            "severity",
            &["a".into()],
            &["1".into(), "2".into()],
            &[vec![0.0, 1.0]],
        );
        let y = (TOP + 24 + 2) as usize;
        let lx = 8 + 16 + 2;
        let (lo, hi) = (c.get(lx, y), c.get(lx + 64, y));
        assert!(
            hi.iter().map(|v| *v as u32).sum::<u32>() < lo.iter().map(|v| *v as u32).sum::<u32>()
        );
        let img: Vec<u8> = (0..4).collect();
        let g = image_grid(&[&img], (1, 2, 2), 1, 2, &[]);
        assert_eq!(g.get(2, 2), [0, 0, 0]);
        assert_eq!(g.get(2 + 3, 2 + 3), [3, 3, 3]);
    }
}
