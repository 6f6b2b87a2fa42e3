//! The corruption suite of `ood_eval`: deterministic image corruptions at five severities
//! (in the spirit of ImageNet-C / MNIST-C), applied to `[0, 1]` channel-major images.

use pretext_plugin::Rng;

/// Every corruption, in report order (the names a pipeline may list).
pub use crate::pipeline::CORRUPTIONS as ALL;

/// Corrupt `img` (`c x h x w`) at `severity` 1..=5; `seed` drives the random ones.
pub fn apply(
    name: &str,
    img: &[f32],
    shape: (usize, usize, usize),
    severity: u8,
    seed: u64,
) -> Option<Vec<f32>> {
    let s = (severity.clamp(1, 5) - 1) as usize;
    let out = match name {
        "gaussian_noise" => {
            let std = [0.04, 0.08, 0.12, 0.18, 0.26][s];
            let mut rng = Rng::new(seed);
            img.iter()
                .map(|&v| (v + (rng.normal() * std) as f32).clamp(0.0, 1.0))
                .collect()
        }
        "gaussian_blur" => blur(img, shape, [0.5, 0.75, 1.0, 1.5, 2.0][s]),
        "contrast" => {
            let c = [0.75, 0.5, 0.4, 0.3, 0.15][s];
            per_channel(img, shape, |ch| {
                let mean = ch.iter().sum::<f32>() / ch.len() as f32;
                ch.iter().map(|v| (v - mean) * c + mean).collect()
            })
        }
        "brightness" => {
            let d = [0.1, 0.2, 0.3, 0.4, 0.5][s];
            img.iter().map(|v| (v + d).clamp(0.0, 1.0)).collect()
        }
        "rotation" => warp(img, shape, |y, x, cy, cx| {
            let a = [5.0f64, 10.0, 15.0, 20.0, 30.0][s].to_radians();
            let (dy, dx) = (y - cy, x - cx);
            (
                cy + dy * a.cos() - dx * a.sin(),
                cx + dy * a.sin() + dx * a.cos(),
            )
        }),
        "translation" => {
            let t = [0.04, 0.08, 0.12, 0.16, 0.2][s];
            let (dy, dx) = (t * shape.1 as f64, t * shape.2 as f64);
            warp(img, shape, move |y, x, _, _| (y - dy, x - dx))
        }
        "elastic" => {
            let alpha = [0.5, 0.8, 1.1, 1.4, 1.8][s];
            let (h, w) = (shape.1, shape.2);
            let mut rng = Rng::new(seed);
            let field = |rng: &mut Rng| -> Vec<f32> {
                let noise: Vec<f32> = (0..h * w).map(|_| rng.range(-1.0, 1.0) as f32).collect();
                let smooth = blur(&noise, (1, h, w), 2.0);
                let peak = smooth.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                smooth.iter().map(|v| v / peak * alpha as f32).collect()
            };
            let (fy, fx) = (field(&mut rng), field(&mut rng));
            warp(img, shape, move |y, x, _, _| {
                let i = (y as usize).min(h - 1) * w + (x as usize).min(w - 1);
                (y + fy[i] as f64, x + fx[i] as f64)
            })
        }
        "pixelate" => {
            let f = [0.9, 0.75, 0.6, 0.5, 0.35][s];
            let (c, h, w) = shape;
            let (sh, sw) = (
                ((h as f64 * f).round() as usize).max(1),
                ((w as f64 * f).round() as usize).max(1),
            );
            let mut out = vec![0f32; img.len()];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        // Average of the block that output pixel (y, x) falls in, at low resolution.
                        let (by, bx) = (y * sh / h, x * sw / w);
                        let (y0, y1) = (by * h / sh, ((by + 1) * h).div_ceil(sh).min(h));
                        let (x0, x1) = (bx * w / sw, ((bx + 1) * w).div_ceil(sw).min(w));
                        let mut sum = 0.0;
                        for yy in y0..y1 {
                            for xx in x0..x1 {
                                sum += img[(ch * h + yy) * w + xx];
                            }
                        }
                        out[(ch * h + y) * w + x] = sum / ((y1 - y0) * (x1 - x0)).max(1) as f32;
                    }
                }
            }
            out
        }
        _ => return None,
    };
    Some(out)
}

fn per_channel(
    img: &[f32],
    shape: (usize, usize, usize),
    f: impl Fn(&[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let n = shape.1 * shape.2;
    img.chunks(n)
        .flat_map(|ch| f(ch).into_iter().map(|v| v.clamp(0.0, 1.0)))
        .collect()
}

/// Separable Gaussian blur with clamped edges.
fn blur(img: &[f32], shape: (usize, usize, usize), sigma: f64) -> Vec<f32> {
    let (c, h, w) = shape;
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let total: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / total).collect();
    let mut tmp = vec![0f32; img.len()];
    let mut out = vec![0f32; img.len()];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                tmp[(ch * h + y) * w + x] = (-r..=r)
                    .map(|i| {
                        k[(i + r) as usize]
                            * img[(ch * h + y) * w
                                + (x as isize + i).clamp(0, w as isize - 1) as usize]
                    })
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                out[(ch * h + y) * w + x] = (-r..=r)
                    .map(|i| {
                        k[(i + r) as usize]
                            * tmp[(ch * h + (y as isize + i).clamp(0, h as isize - 1) as usize) * w
                                + x]
                    })
                    .sum();
            }
        }
    }
    out
}

/// Resample with bilinear interpolation: output pixel (y, x) reads the input at
/// `src(y, x, cy, cx)`; outside the image reads 0.
fn warp(
    img: &[f32],
    shape: (usize, usize, usize),
    src: impl Fn(f64, f64, f64, f64) -> (f64, f64),
) -> Vec<f32> {
    let (c, h, w) = shape;
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let at = |ch: usize, y: isize, x: isize| -> f32 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            img[(ch * h + y as usize) * w + x as usize]
        }
    };
    let mut out = vec![0f32; img.len()];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = src(y as f64, x as f64, cy, cx);
                let (y0, x0) = (sy.floor() as isize, sx.floor() as isize);
                let (fy, fx) = ((sy - y0 as f64) as f32, (sx - x0 as f64) as f32);
                let top = at(ch, y0, x0) * (1.0 - fx) + at(ch, y0, x0 + 1) * fx;
                let bottom = at(ch, y0 + 1, x0) * (1.0 - fx) + at(ch, y0 + 1, x0 + 1) * fx;
                out[(ch * h + y) * w + x] = (top * (1.0 - fy) + bottom * fy).clamp(0.0, 1.0);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (
            m,
            (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    }

    #[test]
    fn pixel_statistics_of_each_corruption() {
        let shape = (1, 32, 32);
        let grey = vec![0.5f32; 32 * 32];
        let stripes: Vec<f32> = (0..32 * 32)
            .map(|i| if (i % 32) % 4 < 2 { 0.2 } else { 0.8 })
            .collect();
        // Noise: mean kept, std ≈ the severity's sigma.
        let (m, s) = stats(&apply("gaussian_noise", &grey, shape, 3, 1).unwrap());
        assert!(
            (m - 0.5).abs() < 0.02 && (s - 0.12).abs() < 0.015,
            "{m} {s}"
        );
        // Blur keeps a constant image and the mean, and lowers the variance of stripes.
        assert_eq!(
            apply("gaussian_blur", &grey, shape, 5, 0)
                .unwrap()
                .iter()
                .map(|v| (v * 1e4).round())
                .collect::<Vec<_>>(),
            vec![5000.0; 1024]
        );
        let (bm, bs) = stats(&apply("gaussian_blur", &stripes, shape, 3, 0).unwrap());
        let (sm, ss) = stats(&stripes);
        assert!(
            (bm - sm).abs() < 1e-3 && bs < ss * 0.5,
            "{bm} {bs} vs {sm} {ss}"
        );
        // Contrast scales deviations from the mean by the severity's factor (0.4 at 3).
        let (cm, cs) = stats(&apply("contrast", &stripes, shape, 3, 0).unwrap());
        assert!((cm - sm).abs() < 1e-5 && (cs - 0.4 * ss).abs() < 1e-5);
        // Brightness adds 0.3 at severity 3 (no clipping from 0.5).
        let (brm, brs) = stats(&apply("brightness", &grey, shape, 3, 0).unwrap());
        assert!((brm - 0.8).abs() < 1e-6 && brs < 1e-6);
        // Geometric ones keep the interior of a constant image; translation moves content.
        for name in ["rotation", "elastic"] {
            let out = apply(name, &grey, shape, 2, 3).unwrap();
            assert!((out[16 * 32 + 16] - 0.5).abs() < 1e-5, "{name}");
        }
        let mut dot = vec![0f32; 32 * 32];
        dot[10 * 32 + 10] = 1.0;
        let moved = apply("translation", &dot, shape, 1, 0).unwrap();
        let idx = moved
            .iter()
            .enumerate()
            .fold(0, |b, (i, v)| if *v > moved[b] { i } else { b });
        assert!(idx / 32 > 10 && idx % 32 > 10, "moved to {idx}");
        // Pixelation keeps the mean of stripes (block averages) and removes detail.
        let (pm, ps) = stats(&apply("pixelate", &stripes, shape, 5, 0).unwrap());
        assert!((pm - sm).abs() < 0.05 && ps < ss, "{pm} {ps}");
        // Every corruption is deterministic given the seed, and unknown names are None.
        for name in ALL {
            assert_eq!(
                apply(name, &stripes, shape, 4, 9),
                apply(name, &stripes, shape, 4, 9)
            );
        }
        assert!(apply("frost", &grey, shape, 1, 0).is_none());
    }
}
