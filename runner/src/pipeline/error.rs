//! Pipeline errors, and the machinery that turns byte spans and toml/serde
//! error messages into friendly `file:line:col` diagnostics.
//!
//! [`PipelineError`] is the only error type the pipeline module returns. The
//! crate-private [`Source`] knows the text that was parsed (after `--set`
//! overrides were applied), maps byte offsets back to 1-based line/column in
//! the file as written, and finds the TOML key path at an offset so that
//! messages can name the table they are about.

use std::cell::OnceCell;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, TableLike, Value};

/// An error found while reading, overriding, parsing or validating a pipeline.
///
/// Displays as `error: <file>:<line>:<col>: <message>` (or
/// `error: <file>: <message>` when no position is known), followed by
/// `\n  help: <help>` when there is a hint, and by `\n  see: <reference page>#<anchor>` when
/// the error is about a key or a stage kind that the TOML reference documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineError {
    /// The pipeline file, as given by the caller; `--set` for a malformed override.
    pub file: PathBuf,
    /// 1-based line in `file`, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters) in `file`, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What to do about it (a did-you-mean, the accepted values, ...).
    pub help: Option<String>,
    /// The section of the TOML reference that documents the key or stage kind involved,
    /// e.g. `docs/reference/pretrain.md#optim`. (Boxed to keep the error small.)
    pub see: Option<Box<str>>,
}

impl PipelineError {
    /// An error about `file` with no position.
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        PipelineError {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
            see: None,
        }
    }

    /// Sets (or clears) the help line.
    pub fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Sets (or clears) the `see:` line: a reference page section.
    pub fn with_see(mut self, see: Option<String>) -> Self {
        self.see = see.map(String::into_boxed_str);
        self
    }

    /// Sets the 1-based position.
    pub fn with_position(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        if let Some(see) = &self.see {
            write!(f, "\n  see: {see}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PipelineError {}

/// `did you mean `x`?` for the candidate closest to `got`, if it is close enough.
pub(crate) fn did_you_mean<'a, I>(got: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(got, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// The candidate closest to `got` (Jaro-Winkler >= 0.8), if any.
pub(crate) fn closest<'a, I>(got: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best: Option<(f64, &str)> = None;
    for cand in candidates {
        let score = strsim::jaro_winkler(&got.to_ascii_lowercase(), &cand.to_ascii_lowercase());
        if score >= 0.8 && !best.is_some_and(|(s, _)| score <= s) {
            best = Some((score, cand));
        }
    }
    best.map(|(_, c)| c)
}

/// `` `a`, `b`, `c` `` for help lines.
pub(crate) fn list<'a, I>(items: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the TOML reference lives, relative to the repository root.
pub(crate) const REFERENCE_DIR: &str = "docs/reference";

/// Stage keys whose values are tables or lists documented in a section of their own on the
/// stage kind's reference page (the section's anchor is the key).
pub(crate) const REFERENCE_SECTIONS: [&str; 13] = [
    "source",
    "split",
    "near_duplicates",
    "quality",
    "fail_if",
    "views",
    "objective",
    "model",
    "optim",
    "collapse",
    "curriculum",
    "linear",
    "knn",
];

/// Ingest formats with a section of their own (anchor: the format) on the ingest page.
pub(crate) const REFERENCE_FORMATS: [&str; 5] = ["idx", "image_folder", "parquet", "csv", "text"];

/// The reference page and anchor that document the key at `path`, e.g. `("pretrain", "optim")`
/// for `stages.ssl.optim.lr`. `kind` is the stage's `kind` as written and `format` its
/// `source.format`, when the path is inside a stage that has them.
///
/// - the top level, `[pipeline]` and `[stages]`: `pipeline.md#top-level`, `#pipeline`, `#stages`
///   (also for a stage whose name is not a valid stage name);
/// - a stage's `kind`, or any key of a stage whose kind is missing, unknown or not supported:
///   `pipeline.md#stage-kinds`; `expect`: `pipeline.md#expect`;
/// - keys of a stage of a supported kind: `<kind>.md#keys`, or the key's own section for the
///   tables in [`REFERENCE_SECTIONS`] and any key nested in a table (`source` keys go to the
///   section of their format).
pub(crate) fn reference_section(
    path: &[Seg],
    kind: Option<&str>,
    format: Option<&str>,
) -> (String, String) {
    let key = |i: usize| match path.get(i) {
        Some(Seg::Key(k)) => Some(k.as_str()),
        _ => None,
    };
    let at = |page: &str, anchor: &str| (page.to_string(), anchor.to_string());
    match key(0) {
        Some("stages") => {}
        Some("pipeline") => return at("pipeline", "pipeline"),
        _ => return at("pipeline", "top-level"),
    }
    let kind = kind
        .and_then(super::types::StageKind::from_name)
        .filter(|k| k.is_supported());
    let valid_name = key(1).is_some_and(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if path.len() == 1 || !valid_name {
        // The `stages` table itself, or a stage whose name is the problem.
        return at("pipeline", "stages");
    }
    let Some(kind) = kind else {
        return if path.len() == 2 {
            at("pipeline", "stages")
        } else {
            at("pipeline", "stage-kinds")
        };
    };
    let page = kind.as_str();
    match key(2) {
        None => at(page, "keys"),
        Some("kind") => at("pipeline", "stage-kinds"),
        Some("expect") => at("pipeline", "expect"),
        Some("source") => match format.filter(|f| REFERENCE_FORMATS.contains(f)) {
            Some(f) => at(page, f),
            None => at(page, "source"),
        },
        // A finetune stage's `model` (with `init`) is a pretrain stage's table.
        Some("model") if page == "finetune" => match key(3) {
            Some(_) => at("pretrain", "model"),
            None => at(page, "keys"),
        },
        Some(k) if REFERENCE_SECTIONS.contains(&k) || key(3).is_some() => at(page, k),
        Some(_) => at(page, "keys"),
    }
}

/// `docs/reference/<page>.md#<anchor>` for a [`reference_section`].
pub(crate) fn reference_link((page, anchor): &(String, String)) -> String {
    format!("{REFERENCE_DIR}/{page}.md#{anchor}")
}

/// One step of a TOML key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

impl Seg {
    pub(crate) fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

/// Formats a key path the way a TOML header would spell it: `stages.ssl.optim`,
/// `stages.aug.views[0][1]`, `stages.p.expect."linear.accuracy"`.
pub(crate) fn format_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Where a table path is shown in messages: `in [stages.ssl]` or `at the top level`.
pub(crate) fn table_phrase(path: &[Seg]) -> String {
    if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{}]", format_path(path))
    }
}

/// What sits at a byte offset of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    /// The offset is inside a key.
    Key,
    /// The offset is inside a value (or a table's span).
    Value,
}

/// The text being parsed, with everything needed to point into it.
pub(crate) struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
    /// For text rewritten by `--set`: rendered line index -> line index in the
    /// file as written, `None` for lines that only exist because of an override.
    line_map: Option<Vec<Option<usize>>>,
    doc: OnceCell<Option<ImDocument<&'a str>>>,
}

impl<'a> Source<'a> {
    /// `text` is what gets parsed; `original` is the file as written when
    /// `text` was produced from it by applying overrides.
    pub(crate) fn new(file: &'a Path, text: &'a str, original: Option<&str>) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let line_map = original.filter(|o| *o != text).map(|o| map_lines(text, o));
        Source {
            file,
            text,
            line_starts,
            line_map,
            doc: OnceCell::new(),
        }
    }

    /// The file the errors are about.
    pub(crate) fn file(&self) -> &Path {
        self.file
    }

    /// 1-based (line, column) of a byte offset, in the file as written.
    /// `None` when the offset lies on a line created by an override.
    fn position(&self, offset: usize) -> Option<(usize, usize)> {
        let offset = offset.min(self.text.len());
        let idx = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[idx];
        let column = self
            .text
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        let line = match &self.line_map {
            Some(map) => map.get(idx).copied().flatten()?,
            None => idx,
        };
        Some((line + 1, column))
    }

    /// An error with no position.
    pub(crate) fn error(&self, message: impl Into<String>, help: Option<String>) -> PipelineError {
        PipelineError::new(self.file, message).with_help(help)
    }

    /// An error pointing at the start of `span`, with a `see:` line for the key there.
    pub(crate) fn error_at(
        &self,
        span: &Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        let see = self.path_at(span.start).map(|(path, _)| self.see(&path));
        self.positioned(span, message, help).with_see(see)
    }

    fn positioned(
        &self,
        span: &Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        let message = message.into();
        match self.position(span.start) {
            Some((line, column)) => self.error(message, help).with_position(line, column),
            None if self.line_map.is_some() => {
                self.error(format!("{message} (set with --set)"), help)
            }
            None => self.error(message, help),
        }
    }

    /// An error pointing at the key `path` if it can be found, else with no position; with a
    /// `see:` line for that key either way.
    pub(crate) fn error_at_key(
        &self,
        path: &[Seg],
        message: impl Into<String>,
        help: Option<String>,
    ) -> PipelineError {
        let see = Some(self.see(path));
        match self.key_span(path) {
            Some(span) => self.positioned(&span, message, help),
            None => self.error(message, help),
        }
        .with_see(see)
    }

    /// The `see:` line for the key at `path`: its section of the TOML reference.
    pub(crate) fn see(&self, path: &[Seg]) -> String {
        let stage = match path {
            [Seg::Key(s), Seg::Key(name), ..] if s == "stages" => Some(name.as_str()),
            _ => None,
        };
        let kind = stage.and_then(|n| self.str_at(&["stages", n, "kind"]));
        let format = stage.and_then(|n| self.str_at(&["stages", n, "source", "format"]));
        reference_link(&reference_section(path, kind, format))
    }

    /// The string value at a key path of the document, if there is one.
    fn str_at(&self, keys: &[&str]) -> Option<&str> {
        let mut item = self.doc()?.as_item();
        for k in keys {
            item = item.get(k)?;
        }
        item.as_str()
    }

    fn doc(&self) -> Option<&ImDocument<&'a str>> {
        self.doc
            .get_or_init(|| ImDocument::parse(self.text).ok())
            .as_ref()
    }

    /// The span of the key at `path` (or of the array element, for an index).
    pub(crate) fn key_span(&self, path: &[Seg]) -> Option<Range<usize>> {
        let doc = self.doc()?;
        let mut table: &dyn TableLike = doc.as_table();
        let mut value: Option<&Value> = None;
        let mut span = None;
        for seg in path {
            match (seg, value) {
                (Seg::Key(k), None) => {
                    let (key, item) = table.get_key_value(k)?;
                    span = key.span();
                    match item {
                        Item::Table(t) => table = t,
                        Item::Value(v) => value = Some(v),
                        _ => return None,
                    }
                }
                (Seg::Key(k), Some(Value::InlineTable(t))) => {
                    let (key, item) = t.get_key_value(k)?;
                    span = key.span();
                    value = item.as_value();
                }
                (Seg::Index(i), Some(Value::Array(a))) => {
                    let v = a.get(*i)?;
                    span = v.span();
                    value = Some(v);
                }
                _ => return None,
            }
        }
        span
    }

    /// The key path at a byte offset, and whether the offset is in the key itself.
    pub(crate) fn path_at(&self, offset: usize) -> Option<(Vec<Seg>, Hit)> {
        let doc = self.doc()?;
        let mut path = Vec::new();
        walk_table(doc.as_table(), offset, &mut path)
    }

    /// Turns a toml/serde error into a friendly one.
    pub(crate) fn toml_error(&self, err: &toml::de::Error) -> PipelineError {
        let hit = err.span().and_then(|s| self.path_at(s.start));
        let (message, help) = rewrite_message(err.message(), hit.as_ref());
        let see = hit.as_ref().map(|(path, _)| self.see(path));
        match err.span() {
            Some(span) => self.positioned(&span, message, help),
            None => self.error(message, help),
        }
        .with_see(see)
    }
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && (offset < s.end || s.start == s.end))
}

fn walk_table(
    table: &dyn TableLike,
    offset: usize,
    path: &mut Vec<Seg>,
) -> Option<(Vec<Seg>, Hit)> {
    for (k, item) in table.iter() {
        path.push(Seg::key(k));
        if contains(table.key(k).and_then(|key| key.span()), offset) {
            return Some((path.clone(), Hit::Key));
        }
        if let Some(found) = walk_item(item, offset, path) {
            return Some(found);
        }
        if contains(item.span(), offset) {
            return Some((path.clone(), Hit::Value));
        }
        path.pop();
    }
    None
}

fn walk_item(item: &Item, offset: usize, path: &mut Vec<Seg>) -> Option<(Vec<Seg>, Hit)> {
    match item {
        Item::Table(t) => walk_table(t, offset, path),
        Item::Value(v) => walk_value(v, offset, path),
        Item::ArrayOfTables(a) => {
            // An error about the whole array starts where its first table does.
            if a.span().is_some_and(|s| s.start == offset) {
                return Some((path.clone(), Hit::Value));
            }
            for (i, t) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if let Some(found) = walk_table(t, offset, path) {
                    return Some(found);
                }
                if contains(t.span(), offset) {
                    return Some((path.clone(), Hit::Value));
                }
                path.pop();
            }
            None
        }
        Item::None => None,
    }
}

fn walk_value(value: &Value, offset: usize, path: &mut Vec<Seg>) -> Option<(Vec<Seg>, Hit)> {
    match value {
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if let Some(found) = walk_value(v, offset, path) {
                    return Some(found);
                }
                if contains(v.span(), offset) {
                    return Some((path.clone(), Hit::Value));
                }
                path.pop();
            }
            None
        }
        Value::InlineTable(t) => walk_table(t, offset, path),
        _ => None,
    }
}

/// Maps each line of `rendered` to the same line of `original` (longest
/// common subsequence), so positions survive the re-rendering done by `--set`.
fn map_lines(rendered: &str, original: &str) -> Vec<Option<usize>> {
    let r: Vec<&str> = rendered.split('\n').collect();
    let o: Vec<&str> = original.split('\n').collect();
    let (n, m) = (r.len(), o.len());
    // lcs[i][j] = LCS length of r[i..] and o[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if r[i].trim_end() == o[j].trim_end() {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let mut map = vec![None; n];
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if r[i].trim_end() == o[j].trim_end() {
            map[i] = Some(j);
            i += 1;
            j += 1;
        } else if lcs[at(i + 1, j)] >= lcs[at(i, j + 1)] {
            i += 1;
        } else {
            j += 1;
        }
    }
    map
}

/// The names between backticks in `s`.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde's name for an expected type, in words.
fn expected_words(expected: &str) -> String {
    let e = expected.trim();
    match e {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer".into()
        }
        "f32" | "f64" => "a number".into(),
        "a string" | "a borrowed string" | "string" => "a string".into(),
        "a boolean" | "bool" => "a boolean (`true` or `false`)".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        _ if e.starts_with("struct ") => "a table".into(),
        _ => e.to_string(),
    }
}

/// serde's description of a found value, in TOML words.
fn found_words(found: &str) -> String {
    match found.trim() {
        "sequence" => "an array".into(),
        "map" => "a table".into(),
        f => f.replace("floating point", "float"),
    }
}

/// Rewrites toml/serde messages ("unknown field `x`, expected one of ...",
/// "missing field", "invalid type") into pipeline terms, with a help line.
pub(crate) fn rewrite_message(
    message: &str,
    hit: Option<&(Vec<Seg>, Hit)>,
) -> (String, Option<String>) {
    let message = message.trim();
    let path: &[Seg] = hit.map_or(&[], |(p, _)| p.as_slice());
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = backticked(expected);
        let table: &[Seg] = match hit {
            Some((p, Hit::Key)) if !p.is_empty() => &p[..p.len() - 1],
            Some((p, _)) => p,
            None => &[],
        };
        let help = did_you_mean(field, expected.iter().copied()).or_else(|| {
            if expected.is_empty() {
                Some("this table takes no keys".into())
            } else {
                Some(format!(
                    "expected one of {}",
                    list(expected.iter().copied())
                ))
            }
        });
        let location = if hit.is_some() {
            format!(" {}", table_phrase(table))
        } else {
            String::new()
        };
        return (format!("unknown key `{field}`{location}"), help);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return (
            format!("missing key `{field}` {}", table_phrase(path)),
            None,
        );
    }
    for (prefix, verb) in [
        ("invalid type: ", "must be"),
        ("invalid value: ", "must be"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                let what = if path.is_empty() {
                    "value".to_string()
                } else {
                    format!("`{}`", format_path(path))
                };
                return (
                    format!(
                        "{what} {verb} {}, found {}",
                        expected_words(expected),
                        found_words(found)
                    ),
                    None,
                );
            }
        }
    }
    // Syntax errors: "invalid string\nexpected `\"`, `'`" -> message + help.
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid TOML").to_string();
    let rest: Vec<&str> = lines.collect();
    let help = (!rest.is_empty()).then(|| rest.join("; "));
    (format!("invalid TOML: {first}"), help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_position() {
        let e = PipelineError::new("p.toml", "boom")
            .with_position(3, 5)
            .with_help(Some("try again".into()));
        assert_eq!(e.to_string(), "error: p.toml:3:5: boom\n  help: try again");
        let e = PipelineError::new("--set", "bad");
        assert_eq!(e.to_string(), "error: --set: bad");
    }

    #[test]
    fn see_line_after_help() {
        let e = PipelineError::new("p.toml", "boom")
            .with_help(Some("try again".into()))
            .with_see(Some("docs/reference/pipeline.md#stages".into()));
        assert_eq!(
            e.to_string(),
            "error: p.toml: boom\n  help: try again\n  see: docs/reference/pipeline.md#stages"
        );
    }

    #[test]
    fn reference_sections() {
        let path = |s: &str| -> Vec<Seg> { s.split('.').map(Seg::key).collect() };
        let see =
            |p: &str, kind, format| reference_link(&reference_section(&path(p), kind, format));
        assert_eq!(
            see("seed", None, None),
            "docs/reference/pipeline.md#top-level"
        );
        assert_eq!(
            see("pipeline.seed", None, None),
            "docs/reference/pipeline.md#pipeline"
        );
        assert_eq!(
            see("stages", None, None),
            "docs/reference/pipeline.md#stages"
        );
        assert_eq!(
            see("stages.a", None, None),
            "docs/reference/pipeline.md#stages"
        );
        assert_eq!(
            see("stages.a", Some("probe"), None),
            "docs/reference/probe.md#keys"
        );
        assert_eq!(
            see("stages.a.kind", Some("pretrian"), None),
            "docs/reference/pipeline.md#stage-kinds"
        );
        assert_eq!(
            see("stages.a.epochs", Some("pretrian"), None),
            "docs/reference/pipeline.md#stage-kinds"
        );
        let unsupported = super::super::types::StageKind::ALL
            .into_iter()
            .find(|k| !k.is_supported());
        if let Some(k) = unsupported {
            assert_eq!(
                see("stages.a.epochs", Some(k.as_str()), None),
                "docs/reference/pipeline.md#stage-kinds"
            );
        }
        assert_eq!(
            see("stages.a.expect.x.min", Some("probe"), None),
            "docs/reference/pipeline.md#expect"
        );
        assert_eq!(
            see("stages.a.epochs", Some("pretrain"), None),
            "docs/reference/pretrain.md#keys"
        );
        assert_eq!(
            see("stages.a.optim.lr", Some("pretrain"), None),
            "docs/reference/pretrain.md#optim"
        );
        assert_eq!(
            see("stages.a.source.images", Some("ingest"), Some("idx")),
            "docs/reference/ingest.md#idx"
        );
        assert_eq!(
            see("stages.a.source.format", Some("ingest"), Some("text")),
            "docs/reference/ingest.md#text"
        );
        let mut drop = path("stages.a.drop");
        drop.push(Seg::Index(1));
        assert_eq!(
            reference_link(&reference_section(&drop, Some("curate"), None)),
            "docs/reference/curate.md#keys"
        );
        let mut phase = path("stages.a.curriculum");
        phase.extend([Seg::Index(1), Seg::key("size")]);
        assert_eq!(
            reference_link(&reference_section(&phase, Some("pretrain"), None)),
            "docs/reference/pretrain.md#curriculum"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("epoch", ["epochs", "lr"]), Some("epochs"));
        assert_eq!(
            closest("pretrian", ["ingest", "pretrain"]),
            Some("pretrain")
        );
        assert_eq!(closest("zzz", ["epochs", "lr"]), None);
    }

    #[test]
    fn positions_are_one_based_and_count_chars() {
        let text = "a = 1\nbé = \"x\"\n";
        let src = Source::new(Path::new("f"), text, None);
        let off = text.find("\"x\"").unwrap();
        let e = src.error_at(&(off..off + 3), "m", None);
        assert_eq!((e.line, e.column), (Some(2), Some(6)));
    }

    #[test]
    fn line_map_skips_inserted_lines() {
        let original = "[a]\nx = 1\n[b]\ny = 2\n";
        let rendered = "[a]\nx = 1\nnew = 3\n[b]\ny = 2\n";
        let map = map_lines(rendered, original);
        assert_eq!(map[..5], [Some(0), Some(1), None, Some(2), Some(3)]);
    }

    #[test]
    fn path_lookup() {
        let text = "[stages.ssl]\noptim = { lrr = 1 }\nviews = [[\"a\", { name = 1 }]]\n";
        let src = Source::new(Path::new("f"), text, None);
        let (p, hit) = src.path_at(text.find("lrr").unwrap()).unwrap();
        assert_eq!(format_path(&p), "stages.ssl.optim.lrr");
        assert_eq!(hit, Hit::Key);
        let (p, _) = src.path_at(text.find("1 }]").unwrap()).unwrap();
        assert_eq!(format_path(&p), "stages.ssl.views[0][1].name");
        let span = src
            .key_span(&[
                Seg::key("stages"),
                Seg::key("ssl"),
                Seg::key("views"),
                Seg::Index(0),
            ])
            .unwrap();
        assert_eq!(&text[span], "[\"a\", { name = 1 }]");
    }
}
