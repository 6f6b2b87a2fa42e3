//! The tokenizer of a text dataset: `tokenizer.json` beside `dataset.parquet` (a standard
//! Hugging Face file), written by ingest, carried forward by curate and augment, read by
//! every stage that encodes text or shows it.

use std::path::Path;

use crate::data::tokenizer::{TextTokenizer, CLS, MASK, PAD, SPECIAL, UNK};
use crate::error::{io_err, StageError};

pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Copy a text dataset's tokenizer from `from` into `to` (nothing for image datasets): stages
/// whose output stands for the dataset (curate) or is read as text (augment's preview) keep it.
pub fn copy(from: &Path, to: &Path) -> Result<(), StageError> {
    let src = from.join(TOKENIZER_FILE);
    if src.exists() {
        let dst = to.join(TOKENIZER_FILE);
        std::fs::copy(&src, &dst).map_err(|e| io_err(&dst, e))?;
    }
    Ok(())
}

/// `[CLS]` + the tokens of `text`, cut or padded (`[PAD]`) to `len`, into `ids` (cleared
/// first). Returns the length before cutting or padding.
pub fn encode_passage(
    tk: &TextTokenizer,
    text: &str,
    len: usize,
    ids: &mut Vec<u32>,
) -> Result<usize, StageError> {
    ids.clear();
    ids.push(CLS);
    tk.encode_into(text, ids).map_err(StageError::Input)?;
    let full = ids.len();
    ids.resize(len, PAD);
    Ok(full)
}

/// Reads a `tokenizer.json` and returns it with the file's text; errors name the file.
pub fn read(p: &Path) -> Result<(TextTokenizer, String), StageError> {
    let bytes = crate::data::read_regular(p).map_err(|e| io_err(p, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        StageError::Input(format!(
            "{}: not a tokenizer.json (the file is not UTF-8 text)",
            p.display()
        ))
    })?;
    let tk = TextTokenizer::from_json(&text)
        .map_err(|m| StageError::Input(format!("{}: {m}", p.display())))?;
    Ok((tk, text))
}

/// The tokenizer stored beside a text dataset, if any.
pub fn load(dir: &Path) -> Result<Option<TextTokenizer>, StageError> {
    let p = dir.join(TOKENIZER_FILE);
    if !p.exists() {
        return Ok(None);
    }
    read(&p).map(|(tk, _)| Some(tk))
}

/// A token sequence as text for people: learned tokens decoded, `[MASK]` and `[UNK]` shown,
/// `[CLS]` and padding left out.
pub fn render(tk: &TextTokenizer, ids: &[u32]) -> String {
    let mut out = String::new();
    let mut run: Vec<u32> = Vec::new();
    let flush = |run: &mut Vec<u32>, out: &mut String| {
        out.push_str(&tk.decode(run));
        run.clear();
    };
    for &t in ids {
        match t {
            MASK => {
                flush(&mut run, &mut out);
                out.push_str("[MASK]");
            }
            UNK => {
                flush(&mut run, &mut out);
                out.push_str("[UNK]");
            }
            t if t < SPECIAL => {}
            t => run.push(t),
        }
    }
    flush(&mut run, &mut out);
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_masks_and_drops_padding() {
        let (tk, _) = TextTokenizer::train(std::iter::once("a b c"), 300, 5, 8).unwrap();
        let mut ids = vec![CLS];
        ids.extend(tk.encode(" a").unwrap());
        ids.push(MASK);
        ids.extend(tk.encode("c ").unwrap());
        ids.extend([UNK, PAD, PAD]);
        assert_eq!(render(&tk, &ids), "a[MASK]c [UNK]");
    }
}
