//! `kind = "ingest"`: the split, the error policy, image options and the tokenizer of text
//! sources. The `source` table itself is in `source.rs`.

use std::ops::Range;

use super::super::raw::{RawIngest, RawSplit, RawTokenizer};
use super::super::types::{
    ColorMode, IngestConfig, OnError, Split, TokenizerConfig, TokenizerVocab,
};
use super::cx::FloatRule;
use super::{Result, StageCx};

const ON_ERROR: [(&str, OnError); 2] = [("fail", OnError::Fail), ("skip", OnError::Skip)];
const COLORS: [(&str, ColorMode); 2] =
    [("grayscale", ColorMode::Grayscale), ("rgb", ColorMode::Rgb)];

impl StageCx<'_, '_, '_> {
    pub(super) fn ingest(&self, b: &RawIngest) -> Result<IngestConfig> {
        let source = self.source(&b.source)?;
        let split = self.split(b.split.as_deref())?;
        let limit = b
            .limit
            .as_ref()
            .map(|v| self.r.int(v, &self.what("limit"), 1, None))
            .transpose()?;
        let on_error = self.keyword_or(
            &b.on_error,
            OnError::Fail,
            &ON_ERROR,
            "expected one of",
            |w| format!("unknown `{}` policy `{w}`", self.what("on_error")),
        )?;
        let images_only = |key: &str, span: Range<usize>| {
            self.err_span(
                &span,
                format!(
                    "`{}` only applies to image sources (`idx`, `image_folder`, or `parquet` with `image`)",
                    self.what(key)
                ),
                Some(format!("this source reads feature vectors; remove `{key}`")),
            )
        };
        let resize = match &b.resize {
            None => None,
            Some(v) if !source.has_images() => return Err(images_only("resize", v.span())),
            Some(v) => {
                let side = |x: &toml::Value| {
                    x.as_integer()
                        .filter(|n| (1..=8192).contains(n))
                        .map(|n| n as u32)
                };
                let size = match v.get_ref() {
                    toml::Value::Integer(_) => side(v.get_ref()).map(|s| [s, s]),
                    toml::Value::Array(a) if a.len() == 2 => {
                        side(&a[0]).zip(side(&a[1])).map(|(h, w)| [h, w])
                    }
                    _ => None,
                };
                let Some(size) = size else {
                    return Err(self.err_at(
                        v,
                        format!(
                            "`{}` must be [height, width] or one number, each from 1 to 8192",
                            self.what("resize")
                        ),
                        Some("e.g. resize = [64, 64] or resize = 64".into()),
                    ));
                };
                Some(size)
            }
        };
        let color = match &b.color {
            None => None,
            Some(v) if !source.has_images() => return Err(images_only("color", v.span())),
            Some(v) => Some(self.keyword(v, &COLORS, "expected one of", |w| {
                format!("unknown color `{w}`")
            })?),
        };
        let tokenizer =
            match (&b.tokenizer, source.is_text()) {
                (None, false) => None,
                (Some(_), false) => return Err(self.err_key(
                    &["tokenizer"],
                    format!(
                        "`{}` only applies to text sources (format = \"text\")",
                        self.what("tokenizer")
                    ),
                    Some(
                        "remove `tokenizer`, or read text with source = { format = \"text\", .. }"
                            .into(),
                    ),
                )),
                (None, true) => {
                    return Err(self.err_key(
                        &["source"],
                        format!(
                            "a text source needs `{}`: how to turn passages into token sequences",
                            self.what("tokenizer")
                        ),
                        Some("e.g. tokenizer = { vocab_size = 2000, seq_len = 64 }".into()),
                    ))
                }
                (Some(tk), true) => Some(self.tokenizer(tk)?),
            };
        Ok(IngestConfig {
            source,
            split,
            limit,
            on_error,
            resize,
            color,
            tokenizer,
        })
    }

    /// `tokenizer = { .. }` of a text source: trained (`vocab_size`, `min_frequency`) or
    /// brought (`path`), not both.
    fn tokenizer(&self, tk: &RawTokenizer) -> Result<TokenizerConfig> {
        let vocab = match &tk.path {
            None => TokenizerVocab::Train {
                vocab_size: self.int(
                    &tk.vocab_size,
                    "tokenizer.vocab_size",
                    262,
                    Some(65536),
                    2000,
                )? as usize,
                min_frequency: self.int(
                    &tk.min_frequency,
                    "tokenizer.min_frequency",
                    1,
                    None,
                    2,
                )?,
            },
            Some(p) => {
                for (key, v) in [
                    ("vocab_size", &tk.vocab_size),
                    ("min_frequency", &tk.min_frequency),
                ] {
                    if let Some(v) = v {
                        return Err(self.err_at(
                            v,
                            format!(
                                "`{}` trains a tokenizer, but `path` brings one",
                                self.what(&format!("tokenizer.{key}"))
                            ),
                            Some(format!(
                                "remove `{key}` to use the vocabulary of the file, or `path` to \
                                 train one on the train split"
                            )),
                        ));
                    }
                }
                let written = self.r.non_empty_path(p, &self.what("tokenizer.path"))?;
                TokenizerVocab::File {
                    path: self.r.path(&written),
                }
            }
        };
        Ok(TokenizerConfig {
            vocab,
            seq_len: self.int(&tk.seq_len, "tokenizer.seq_len", 8, Some(4096), 64)? as usize,
        })
    }

    /// `split = { train, test }`: either may be left out; they must sum to 1.
    fn split(&self, s: Option<&RawSplit>) -> Result<Split> {
        let Some(s) = s else {
            return Ok(Split {
                train: 0.8,
                test: 0.2,
            });
        };
        let unit = |v: &Option<toml::Spanned<f64>>, key: &str| {
            v.as_ref()
                .map(|v| self.r.float(v, &self.what(key), FloatRule::OpenUnit))
                .transpose()
        };
        let train = unit(&s.train, "split.train")?;
        let test = unit(&s.test, "split.test")?;
        let (train, test) = match (train, test) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => (a, 1.0 - a),
            (None, Some(b)) => (1.0 - b, b),
            (None, None) => (0.8, 0.2),
        };
        if ((train + test) - 1.0).abs() > 1e-9 {
            return Err(self.err_key(
                &["split"],
                format!(
                    "`{}` must sum to 1, but train + test = {train} + {test} = {}",
                    self.what("split"),
                    ((train + test) * 1e12).round() / 1e12
                ),
                Some("e.g. split = { train = 0.8, test = 0.2 }".into()),
            ));
        }
        Ok(Split { train, test })
    }
}
