//! `--set path.to.key=value` overrides, applied to the TOML document before
//! it is deserialised.
//!
//! The value is parsed as a TOML value (`1`, `0.5`, `true`, `"s"`, `[1, 2]`,
//! `{ a = 1 }`) and falls back to a bare string. The document is edited with
//! `toml_edit`, which keeps the rest of the text as written, so positions in
//! later errors still point into the file (see `Source`'s line map).

use std::borrow::Cow;

use toml_edit::{DocumentMut, Item, Key, Table, TableLike, Value};

use super::error::PipelineError;

/// The `file` that errors about a malformed override name.
pub(crate) const SET_FILE: &str = "--set";

const EXAMPLE: &str =
    "overrides look like `--set stages.ssl.epochs=20` or `--set pipeline.name=\"run-2\"`";

/// One parsed `--set`.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    /// The key path, split on unquoted dots.
    pub path: Vec<String>,
    /// The value to set.
    pub value: Value,
    /// The override as given, for messages.
    pub raw: String,
}

fn set_error(message: String, help: Option<String>) -> PipelineError {
    PipelineError::new(SET_FILE, message).with_help(help)
}

/// Parses `path.to.key=value`.
pub(crate) fn parse_override(raw: &str) -> Result<Override, PipelineError> {
    let Some(eq) = find_unquoted_eq(raw) else {
        return Err(set_error(
            format!("invalid override `{raw}`: expected `path.to.key=value`"),
            Some(EXAMPLE.into()),
        ));
    };
    let (path, value) = (raw[..eq].trim(), raw[eq + 1..].trim());
    if path.is_empty() {
        return Err(set_error(
            format!("invalid override `{raw}`: the key path before `=` is empty"),
            Some(EXAMPLE.into()),
        ));
    }
    let keys = Key::parse(path).map_err(|_| {
        set_error(
            format!("invalid override `{raw}`: `{path}` is not a valid TOML key path"),
            Some("quote keys with dots or spaces in them, e.g. `stages.p.expect.\"linear.accuracy\".min=0.9`".into()),
        )
    })?;
    let value = value
        .parse::<Value>()
        .unwrap_or_else(|_| Value::from(value));
    Ok(Override {
        path: keys.iter().map(|k| k.get().to_string()).collect(),
        value,
        raw: raw.to_string(),
    })
}

/// The byte index of the first `=` outside quotes.
fn find_unquoted_eq(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '=' => return Some(i),
            None => {}
        }
    }
    None
}

/// Applies `overrides` to `text`. Returns `text` unchanged when there are no
/// overrides, or when it is not valid TOML (the parser reports that next).
pub(crate) fn apply<'t>(
    text: &'t str,
    overrides: &[String],
) -> Result<Cow<'t, str>, PipelineError> {
    if overrides.is_empty() {
        return Ok(Cow::Borrowed(text));
    }
    let parsed = overrides
        .iter()
        .map(|o| parse_override(o))
        .collect::<Result<Vec<_>, _>>()?;
    let Ok(mut doc) = text.parse::<DocumentMut>() else {
        return Ok(Cow::Borrowed(text));
    };
    for o in &parsed {
        apply_one(&mut doc, o)?;
    }
    Ok(Cow::Owned(doc.to_string()))
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "a table",
        },
    }
}

fn apply_one(doc: &mut DocumentMut, o: &Override) -> Result<(), PipelineError> {
    let (last, parents) = o.path.split_last().expect("override paths are never empty");
    let mut table: &mut dyn TableLike = doc.as_table_mut();
    for (depth, key) in parents.iter().enumerate() {
        if !table.contains_key(key) {
            let mut new = Table::new();
            new.set_implicit(true);
            table.insert(key, Item::Table(new));
        }
        let item = table.get_mut(key).expect("just inserted");
        let kind = type_name(item);
        table = match item.as_table_like_mut() {
            Some(t) => t,
            None => {
                return Err(set_error(
                    format!(
                        "cannot apply `--set {}`: `{}` is {kind}, not a table",
                        o.raw,
                        o.path[..=depth].join(".")
                    ),
                    Some("only keys inside tables can be overridden".into()),
                ))
            }
        };
    }
    let mut value = o.value.clone();
    if let Some(Item::Value(old)) = table.get(last) {
        // Keep the whitespace and comments around the old value.
        *value.decor_mut() = old.decor().clone();
    }
    table.insert(last, Item::Value(value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn set(text: &str, overrides: &[&str]) -> Result<String, PipelineError> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        apply(text, &o).map(|c| c.into_owned())
    }

    #[test]
    fn values_are_toml_or_bare_strings() {
        let cases = [
            ("a=1", "1"),
            ("a=0.5", "0.5"),
            ("a=true", "true"),
            ("a=\"s\"", "\"s\""),
            ("a=hello world", "\"hello world\""),
            ("a=[1,2]", "[1,2]"),
            ("a={b=1}", "{b=1}"),
            ("a=", "\"\""),
        ];
        for (raw, want) in cases {
            let o = parse_override(raw).unwrap();
            assert_eq!(o.path, ["a"]);
            assert_eq!(o.value.to_string().trim(), want, "{raw}");
        }
    }

    #[test]
    fn quoted_keys_and_equals_in_values() {
        let o = parse_override("stages.p.expect.\"linear.accuracy\".min=0.9").unwrap();
        assert_eq!(o.path, ["stages", "p", "expect", "linear.accuracy", "min"]);
        let o = parse_override("pipeline.description=a=b").unwrap();
        assert_eq!(o.value.as_str(), Some("a=b"));
    }

    #[test]
    fn malformed_overrides() {
        for raw in ["epochs", "=5", " =5", "a..b=1"] {
            let e = parse_override(raw).unwrap_err();
            assert_eq!(e.file, Path::new("--set"), "{raw}");
            assert!(e.help.is_some(), "{raw}");
            assert!(e.line.is_none());
        }
        let e = parse_override("epochs").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("error: --set: invalid override `epochs`: expected `path.to.key=value`\n  help: {EXAMPLE}")
        );
    }

    #[test]
    fn replaces_in_place_and_keeps_comments() {
        let text = "[pipeline]\nname = \"a\" # the name\nseed = 1\n";
        let out = set(text, &["pipeline.seed=2", "pipeline.name=b"]).unwrap();
        assert_eq!(out, "[pipeline]\nname = \"b\" # the name\nseed = 2\n");
    }

    #[test]
    fn creates_keys_and_tables() {
        let text = "[pipeline]\nname = \"a\"\n\n[stages.ssl]\nkind = \"pretrain\"\n";
        let out = set(text, &["stages.ssl.optim.lr=0.1", "pipeline.seed=3"]).unwrap();
        let doc: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(doc["stages"]["ssl"]["optim"]["lr"].as_float(), Some(0.1));
        assert_eq!(doc["pipeline"]["seed"].as_integer(), Some(3));
        // Existing lines are untouched.
        assert!(out.starts_with("[pipeline]\nname = \"a\"\n"));
    }

    #[test]
    fn descends_into_inline_tables() {
        let text = "[stages.ssl]\noptim = { lr = 1.0 }\n";
        let out = set(
            text,
            &["stages.ssl.optim.lr=0.5", "stages.ssl.optim.name=sgd"],
        )
        .unwrap();
        let doc: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(doc["stages"]["ssl"]["optim"]["lr"].as_float(), Some(0.5));
        assert_eq!(doc["stages"]["ssl"]["optim"]["name"].as_str(), Some("sgd"));
    }

    #[test]
    fn cannot_descend_into_a_value() {
        let e = set("[pipeline]\nname = \"a\"\n", &["pipeline.name.x=1"]).unwrap_err();
        assert_eq!(e.file, Path::new("--set"));
        assert!(
            e.message
                .contains("`pipeline.name` is a string, not a table"),
            "{e}"
        );
    }
}
