//! Sample fingerprints for duplicate search: a content hash (exact copies), a 64-bit
//! perceptual hash of images (near copies: the signs of the low-frequency DCT coefficients of a
//! 32×32 grayscale thumbnail against their median, the classic pHash), the cosine similarity
//! of mean-centred thumbnails (to confirm perceptual-hash candidates: on small, similar images
//! such as MNIST digits the hash alone matches many distinct samples), and the search for
//! pairs of perceptual hashes within a Hamming distance (multi-index hashing: split the 64 bits
//! into `d + 1` bands; two hashes within distance `d` agree exactly on at least one band, so
//! only hashes sharing a band value are compared), or of feature vectors above a cosine
//! similarity (exact, all pairs).

use std::collections::HashMap;

use image::imageops::FilterType;
use image::GrayImage;

/// A content hash: 128 bits of blake3 over the sample's bytes.
pub type ContentHash = [u8; 16];

/// The content hash of `bytes`.
pub fn content_hash(bytes: &[u8]) -> ContentHash {
    let h = blake3::hash(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

/// Side of the thumbnail the DCT runs on.
const THUMB: usize = 32;
/// Side of the block of low-frequency coefficients kept.
const LOW: usize = 8;

/// Bytes of a thumbnail ([`thumbnail`]).
pub const THUMB_LEN: usize = THUMB * THUMB;

/// A channel-major `u8` image as a 32×32 grayscale thumbnail (channels averaged, resized with
/// a triangle filter); `None` when `pixels` does not match `shape`.
pub fn thumbnail(shape: (usize, usize, usize), pixels: &[u8]) -> Option<Vec<u8>> {
    let (c, h, w) = shape;
    if c == 0 || h == 0 || w == 0 || pixels.len() != c * h * w {
        return None;
    }
    let plane = h * w;
    let gray: Vec<u8> = (0..plane)
        .map(|i| {
            let s: u32 = (0..c).map(|ch| pixels[ch * plane + i] as u32).sum();
            ((s + c as u32 / 2) / c as u32) as u8
        })
        .collect();
    let img = GrayImage::from_raw(w as u32, h as u32, gray)?;
    Some(if (h, w) == (THUMB, THUMB) {
        img.into_raw()
    } else {
        image::imageops::resize(&img, THUMB as u32, THUMB as u32, FilterType::Triangle).into_raw()
    })
}

/// The perceptual hash of a [`thumbnail`].
pub fn phash_thumbnail(thumb: &[u8]) -> u64 {
    if thumb.len() != THUMB_LEN {
        return 0;
    }
    let cos: Vec<f64> = (0..LOW * THUMB)
        .map(|k| {
            let (u, x) = (k / THUMB, k % THUMB);
            (std::f64::consts::PI * (2 * x + 1) as f64 * u as f64 / (2 * THUMB) as f64).cos()
        })
        .collect();
    // rows[y][u] = Σx px[y][x] cos(u, x); coef[v][u] = Σy cos(v, y) rows[y][u].
    let mut rows = vec![0f64; THUMB * LOW];
    for y in 0..THUMB {
        for u in 0..LOW {
            rows[y * LOW + u] = (0..THUMB)
                .map(|x| thumb[y * THUMB + x] as f64 * cos[u * THUMB + x])
                .sum();
        }
    }
    let mut coef = [0f64; LOW * LOW];
    for v in 0..LOW {
        for u in 0..LOW {
            coef[v * LOW + u] = (0..THUMB)
                .map(|y| cos[v * THUMB + y] * rows[y * LOW + u])
                .sum();
        }
    }
    // Threshold the AC coefficients at their median; the DC bit stays 0.
    let mut ac: Vec<f64> = coef[1..].to_vec();
    ac.sort_by(|a, b| a.total_cmp(b));
    let median = (ac[ac.len() / 2 - 1] + ac[ac.len() / 2]) / 2.0;
    let mut bits = 0u64;
    for (i, &v) in coef.iter().enumerate().skip(1) {
        // A small dead zone keeps flat images (all coefficients ~0) at hash 0.
        if v > median + 1e-6 {
            bits |= 1 << i;
        }
    }
    bits
}

/// The perceptual hash of a channel-major `u8` image (0 when `pixels` does not match).
pub fn phash(shape: (usize, usize, usize), pixels: &[u8]) -> u64 {
    thumbnail(shape, pixels).map_or(0, |t| phash_thumbnail(&t))
}

/// Mean and norm of a thumbnail after subtracting its mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Centred {
    pub mean: f32,
    pub norm: f32,
}

/// The [`Centred`] statistics of `thumb`.
pub fn centred(thumb: &[u8]) -> Centred {
    let n = thumb.len().max(1) as f64;
    let mean = thumb.iter().map(|&x| x as f64).sum::<f64>() / n;
    let norm = thumb
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        .sqrt();
    Centred {
        mean: mean as f32,
        norm: norm as f32,
    }
}

/// Cosine similarity of two mean-centred thumbnails (0 when either is flat): robust to
/// brightness and contrast changes, re-encoding and noise, but not to shifts.
pub fn thumbnail_cosine(a: &[u8], ca: Centred, b: &[u8], cb: Centred) -> f64 {
    if ca.norm <= 0.0 || cb.norm <= 0.0 || a.len() != b.len() {
        return 0.0;
    }
    // Σ (a - ma)(b - mb) = Σ ab - n·ma·mb; the integer dot product vectorises.
    let dot: u64 = a
        .chunks(256)
        .zip(b.chunks(256))
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(&p, &q)| p as u32 * q as u32)
                .sum::<u32>() as u64
        })
        .sum();
    let centred = dot as f64 - a.len() as f64 * ca.mean as f64 * cb.mean as f64;
    (centred / (ca.norm as f64 * cb.norm as f64)).clamp(-1.0, 1.0)
}

/// Bits in which `a` and `b` differ.
pub fn hamming(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Every pair `(i, j, distance)` with `i < j` and `hamming(hashes[i], hashes[j]) <=
/// max_distance`, sorted. `skip` marks entries left out of the search.
pub fn near_pairs(hashes: &[u64], skip: &[bool], max_distance: u32) -> Vec<(usize, usize, u32)> {
    near_pairs_where(hashes, skip, max_distance, |_, _, _| true)
}

/// Like [`near_pairs`], keeping only the pairs `keep(i, j, distance)` accepts (checked as they
/// are found, so rejected candidates never take memory).
pub fn near_pairs_where(
    hashes: &[u64],
    skip: &[bool],
    max_distance: u32,
    mut keep: impl FnMut(usize, usize, u32) -> bool,
) -> Vec<(usize, usize, u32)> {
    let n = hashes.len();
    let live: Vec<usize> = (0..n)
        .filter(|&i| !skip.get(i).copied().unwrap_or(false))
        .collect();
    let mut out = Vec::new();
    let bands = (max_distance as usize + 1).min(64);
    if bands > 16 || live.len() < 512 {
        for (a, &i) in live.iter().enumerate() {
            for &j in &live[a + 1..] {
                let d = hamming(hashes[i], hashes[j]);
                if d <= max_distance && keep(i, j, d) {
                    out.push((i, j, d));
                }
            }
        }
        out.sort_unstable();
        return out;
    }
    // Band b covers bits [start[b], start[b + 1]).
    let start: Vec<u32> = (0..=bands).map(|b| (b * 64 / bands) as u32).collect();
    let band = |h: u64, b: usize| -> u64 {
        let (lo, hi) = (start[b], start[b + 1]);
        let width = hi - lo;
        let mask = if width >= 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        (h >> lo) & mask
    };
    for b in 0..bands {
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for &i in &live {
            buckets.entry(band(hashes[i], b)).or_default().push(i);
        }
        for members in buckets.values() {
            for (a, &i) in members.iter().enumerate() {
                for &j in &members[a + 1..] {
                    let d = hamming(hashes[i], hashes[j]);
                    // Count each pair once: in the first band where the two agree.
                    if d <= max_distance
                        && (0..b).all(|e| band(hashes[i], e) != band(hashes[j], e))
                        && keep(i.min(j), i.max(j), d)
                    {
                        out.push((i.min(j), i.max(j), d));
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// Every pair `(i, j, similarity)` with `i < j` whose cosine similarity is at least
/// `min_cosine`, sorted; `skip` marks entries left out (and zero vectors never match).
pub fn cosine_pairs(
    vectors: &[f32],
    dim: usize,
    skip: &[bool],
    min_cosine: f64,
) -> Vec<(usize, usize, f64)> {
    if dim == 0 {
        return Vec::new();
    }
    let n = vectors.len() / dim;
    let unit: Vec<Option<Vec<f64>>> = (0..n)
        .map(|i| {
            let v = &vectors[i * dim..(i + 1) * dim];
            let norm = v
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt();
            (norm > 0.0 && !skip.get(i).copied().unwrap_or(false))
                .then(|| v.iter().map(|&x| x as f64 / norm).collect())
        })
        .collect();
    let mut out = Vec::new();
    for i in 0..n {
        let Some(a) = &unit[i] else { continue };
        for (j, b) in unit.iter().enumerate().skip(i + 1) {
            let Some(b) = b else { continue };
            let sim: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            if sim >= min_cosine - 1e-12 {
                out.push((i, j, sim.min(1.0)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(seed: u64, h: usize, w: usize) -> Vec<u8> {
        let mut x = seed;
        (0..h * w)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn perceptual_hash_is_stable_under_small_changes() {
        let a = pattern(1, 28, 28);
        let mut b = a.clone();
        for p in b.iter_mut().step_by(7) {
            *p = p.saturating_add(6);
        }
        let brighter: Vec<u8> = a.iter().map(|p| p.saturating_add(10)).collect();
        let other = pattern(2, 28, 28);
        let h = |p: &[u8]| phash((1, 28, 28), p);
        assert!(hamming(h(&a), h(&b)) <= 4, "{}", hamming(h(&a), h(&b)));
        assert!(hamming(h(&a), h(&brighter)) <= 4);
        assert!(
            hamming(h(&a), h(&other)) > 16,
            "{}",
            hamming(h(&a), h(&other))
        );
        assert_eq!(h(&[9; 28 * 28]), 0);
        // Colour images hash their gray version.
        let rgb: Vec<u8> = [a.clone(), a.clone(), a.clone()].concat();
        assert_eq!(phash((3, 28, 28), &rgb), h(&a));
        assert_eq!(phash((1, 2, 2), &[1, 2]), 0);
    }

    #[test]
    fn thumbnail_cosine_ignores_brightness_but_not_content() {
        let a = pattern(1, 28, 28);
        let brighter: Vec<u8> = a.iter().map(|&p| (p / 2).saturating_add(60)).collect();
        let t = |p: &[u8]| thumbnail((1, 28, 28), p).unwrap();
        let (ta, tb, tc) = (t(&a), t(&brighter), t(&pattern(3, 28, 28)));
        let c = |x: &[u8], y: &[u8]| thumbnail_cosine(x, centred(x), y, centred(y));
        assert!(c(&ta, &tb) > 0.99, "{}", c(&ta, &tb));
        assert!(c(&ta, &tc) < 0.5, "{}", c(&ta, &tc));
        let flat = vec![7u8; THUMB_LEN];
        assert_eq!(c(&ta, &flat), 0.0);
        assert_eq!(ta.len(), THUMB_LEN);
        assert!(thumbnail((1, 2, 2), &[1]).is_none());
    }

    #[test]
    fn banded_search_finds_the_same_pairs_as_brute_force() {
        // Random hashes plus planted near copies.
        let mut x = 7u64;
        let mut hashes: Vec<u64> = (0..3000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                x
            })
            .collect();
        for k in 0..40 {
            let flip = (0..(k % 6)).fold(0u64, |m, b| m | 1 << (b * 11 + k % 7));
            hashes.push(hashes[k * 13] ^ flip);
        }
        let skip = vec![false; hashes.len()];
        for d in [0, 3, 5] {
            let banded = near_pairs(&hashes, &skip, d);
            let mut brute = Vec::new();
            for i in 0..hashes.len() {
                for j in i + 1..hashes.len() {
                    let h = hamming(hashes[i], hashes[j]);
                    if h <= d {
                        brute.push((i, j, h));
                    }
                }
            }
            assert_eq!(banded, brute, "d = {d}");
            assert!(!brute.is_empty());
        }
        let mut skip = skip;
        skip[0] = true;
        assert!(near_pairs(&hashes, &skip, 5).iter().all(|p| p.0 != 0));
    }

    #[test]
    fn cosine_pairs_are_exact() {
        let v = [1.0, 0.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let pairs = cosine_pairs(&v, 2, &[false; 4], 0.99);
        assert_eq!(pairs, vec![(0, 1, 1.0)]);
        assert!(cosine_pairs(&v, 2, &[false, true, false, false], 0.99).is_empty());
        assert_eq!(cosine_pairs(&v, 2, &[false; 4], 0.0).len(), 3);
    }
}
