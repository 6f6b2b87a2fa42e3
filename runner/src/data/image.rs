//! Image decoding and the ingest-time image transforms: PNG and JPEG through the `image`
//! crate (built with only those two codecs), conversion to grayscale or RGB (alpha is dropped)
//! and resizing to a fixed size (bilinear, aspect ratio not kept). Pixels leave this module
//! channel-major (`c × h × w`), the layout of [`Sample::Image`].

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, ImageReader, RgbImage};

use super::Sample;

/// The channel layout images are converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    /// One channel (luma).
    Grayscale,
    /// Three channels.
    Rgb,
}

/// What ingest does to every image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImageOptions {
    /// Convert to this channel layout; `None` keeps the source's (gray stays 1 channel, colour
    /// becomes 3, alpha is dropped).
    pub color: Option<Color>,
    /// Resize to `(height, width)`.
    pub resize: Option<(u32, u32)>,
}

impl ImageOptions {
    /// Whether images pass through unchanged.
    pub fn is_identity(&self) -> bool {
        self.color.is_none() && self.resize.is_none()
    }
}

/// Whether `bytes` start like a PNG or JPEG file.
pub fn looks_encoded(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x89, b'P', b'N', b'G']) || bytes.starts_with(&[0xff, 0xd8, 0xff])
}

/// Decodes a PNG or JPEG image. Errors are one-line reasons for [`super::source::BadRecord`].
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => {
            return Err(format!(
                "{other:?} images are not supported; only PNG and JPEG are"
            ))
        }
        None if bytes.is_empty() => return Err("empty file, not an image".into()),
        None => return Err("not a PNG or JPEG image (unrecognised content)".into()),
    }
    let format = reader.format();
    crate::panic_guard::catch(|| reader.decode())
        .map_err(|p| format!("the image decoder failed: {p}"))?
        .map_err(|e| {
            let kind = match format {
                Some(ImageFormat::Png) => "PNG",
                _ => "JPEG",
            };
            format!("corrupt or truncated {kind} image: {e}")
        })
}

fn channel_major(img: &DynamicImage) -> Sample {
    let (w, h) = (img.width() as usize, img.height() as usize);
    match img {
        DynamicImage::ImageLuma8(g) => Sample::Image {
            shape: (1, h, w),
            pixels: g.as_raw().clone(),
        },
        DynamicImage::ImageRgb8(rgb) => {
            let raw = rgb.as_raw();
            let mut pixels = vec![0u8; 3 * h * w];
            for (i, px) in raw.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    pixels[c * h * w + i] = px[c];
                }
            }
            Sample::Image {
                shape: (3, h, w),
                pixels,
            }
        }
        // Everything else is normalised to 8-bit gray or RGB first.
        other if other.color().has_color() => {
            channel_major(&DynamicImage::ImageRgb8(other.to_rgb8()))
        }
        other => channel_major(&DynamicImage::ImageLuma8(other.to_luma8())),
    }
}

/// An image sample as a [`DynamicImage`]; `None` for other shapes (2 or 4+ channels).
fn to_dynamic(shape: (usize, usize, usize), pixels: &[u8]) -> Option<DynamicImage> {
    let (c, h, w) = shape;
    match c {
        1 => GrayImage::from_raw(w as u32, h as u32, pixels.to_vec()).map(DynamicImage::ImageLuma8),
        3 => {
            let mut raw = vec![0u8; 3 * h * w];
            for i in 0..h * w {
                for ch in 0..3 {
                    raw[3 * i + ch] = pixels[ch * h * w + i];
                }
            }
            RgbImage::from_raw(w as u32, h as u32, raw).map(DynamicImage::ImageRgb8)
        }
        _ => None,
    }
}

/// Applies `opts` to a decoded image and returns the channel-major sample.
pub fn finish(img: DynamicImage, opts: &ImageOptions) -> Sample {
    let img = match opts.color {
        None => img,
        Some(Color::Grayscale) => DynamicImage::ImageLuma8(img.to_luma8()),
        Some(Color::Rgb) => DynamicImage::ImageRgb8(img.to_rgb8()),
    };
    let img = match opts.resize {
        Some((h, w)) if (img.height(), img.width()) != (h, w) => {
            img.resize_exact(w, h, image::imageops::FilterType::Triangle)
        }
        _ => img,
    };
    channel_major(&img)
}

/// Applies `opts` to a channel-major image sample (IDX, raw parquet bytes). Samples that are
/// not images, or pass through unchanged, are returned as they are.
pub fn transform(sample: Sample, opts: &ImageOptions) -> Result<Sample, String> {
    if opts.is_identity() {
        return Ok(sample);
    }
    match &sample {
        Sample::Image { shape, pixels } => match to_dynamic(*shape, pixels) {
            Some(img) => Ok(finish(img, opts)),
            None => Err(format!(
                "cannot convert or resize an image with {} channels (only 1 or 3)",
                shape.0
            )),
        },
        Sample::Features(_) | Sample::Tokens { .. } => Ok(sample),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `w × h` test image encoded as PNG or JPEG.
    pub(crate) fn encoded(format: ImageFormat, w: u32, h: u32, rgb: bool) -> Vec<u8> {
        let img = if rgb {
            DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 40) as u8, (y * 40) as u8, 200])
            }))
        } else {
            DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| {
                image::Luma([((x + y) * 30) as u8])
            }))
        };
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_png_and_jpeg_channel_major() {
        let png = decode(&encoded(ImageFormat::Png, 3, 2, true)).unwrap();
        let Sample::Image { shape, pixels } = finish(png, &ImageOptions::default()) else {
            panic!()
        };
        assert_eq!(shape, (3, 2, 3));
        // Red plane first: x * 40 along each row.
        assert_eq!(&pixels[..6], &[0, 40, 80, 0, 40, 80]);
        assert_eq!(&pixels[12..], &[200; 6]);
        let jpg = decode(&encoded(ImageFormat::Jpeg, 8, 4, false)).unwrap();
        let s = finish(jpg, &ImageOptions::default());
        assert_eq!(s.layout().input_shape(), (1, 4, 8));
    }

    #[test]
    fn converts_and_resizes() {
        let png = decode(&encoded(ImageFormat::Png, 6, 4, true)).unwrap();
        let opts = ImageOptions {
            color: Some(Color::Grayscale),
            resize: Some((2, 3)),
        };
        let Sample::Image { shape, .. } = finish(png, &opts) else {
            panic!()
        };
        assert_eq!(shape, (1, 2, 3));
        let gray = Sample::Image {
            shape: (1, 2, 2),
            pixels: vec![0, 50, 100, 150],
        };
        let rgb = transform(
            gray.clone(),
            &ImageOptions {
                color: Some(Color::Rgb),
                resize: None,
            },
        )
        .unwrap();
        assert_eq!(
            rgb,
            Sample::Image {
                shape: (3, 2, 2),
                pixels: [0, 50, 100, 150].repeat(3)
            }
        );
        assert_eq!(transform(gray.clone(), &ImageOptions::default()), Ok(gray));
        let two = Sample::Image {
            shape: (2, 1, 1),
            pixels: vec![1, 2],
        };
        assert!(transform(two, &opts).unwrap_err().contains("2 channels"));
    }

    #[test]
    fn bad_bytes_are_reasons_not_panics() {
        assert!(decode(b"").unwrap_err().contains("empty"));
        assert!(decode(b"hello world, not an image")
            .unwrap_err()
            .contains("not a PNG or JPEG"));
        let mut png = encoded(ImageFormat::Png, 16, 16, true);
        png.truncate(png.len() / 2);
        assert!(decode(&png)
            .unwrap_err()
            .contains("corrupt or truncated PNG"));
        let mut jpg = encoded(ImageFormat::Jpeg, 16, 16, true);
        jpg.truncate(40);
        assert!(decode(&jpg).is_err());
        assert!(decode(b"GIF89a......")
            .unwrap_err()
            .contains("not supported"));
    }
}
