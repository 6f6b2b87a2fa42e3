//! The shape of the code, checked (docs/architecture.md states these as invariants):
//!
//! - no stage module imports another stage module (they share artifacts, `eval`,
//!   `supervised` and `stages/mod.rs`, never each other);
//! - the top-level modules of the `pretext` crate import each other without circles;
//! - no function in `runner/` (the runner and the engine) is longer than 150 lines.
//!
//! The sources are read as text with a small lexer that blanks comments, strings and
//! character literals, so braces and paths inside them do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 150;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent folder")
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in walkdir(dir) {
        if entry.extension().is_some_and(|e| e == "rs") {
            out.push(entry);
        }
    }
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("a folder entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `src` with comments, string literals and character literals replaced by spaces (line
/// breaks kept, so line numbers stay right).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |c: u8| if c == b'\n' { b'\n' } else { b' ' };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend([b' ', b' ']);
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend([b' ', b' ']);
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == b'r'
            && (next == Some(b'"') || next == Some(b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string r"…" or r#"…"#: ends at a quote followed by as many hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(b[i..j].iter().map(|&c| blank(c)));
            i = j;
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    out.push(b' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a): a literal closes
            // within a few bytes.
            let close = if next == Some(b'\\') {
                (i + 2..(i + 12).min(b.len())).find(|&j| b[j] == b'\'')
            } else {
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match close {
                Some(j) => {
                    out.extend(std::iter::repeat_n(b' ', j + 1 - i));
                    i = j + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// `(name, first line, number of lines)` of every function with a body.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let mut depth = 0i64;
        let mut opened = false;
        for (j, l) in lines.iter().enumerate().skip(i) {
            for ch in l.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if !opened && l.trim_end().ends_with(';') {
                break; // a declaration without a body (trait method, extern)
            }
            if opened && depth <= 0 {
                out.push((name.clone(), i + 1, j - i + 1));
                break;
            }
        }
    }
    out
}

/// The name of a function declared on this line, if one is.
fn fn_name(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "fn")?;
    let before_ok = words[..at].iter().all(|w| {
        matches!(
            *w,
            "pub" | "pub(crate)" | "pub(super)" | "const" | "unsafe" | "async" | "extern" | "\"C\""
        ) || w.starts_with("pub(")
    });
    let name: String = words
        .get(at + 1)?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (before_ok && !name.is_empty()).then_some(name)
}

/// Identifiers following `prefix` in `code` (`crate::` → the modules named after it).
fn paths_after<'c>(code: &'c str, prefix: &str) -> BTreeSet<&'c str> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(p) = rest.find(prefix) {
        let before = rest[..p].chars().last();
        let after = &rest[p + prefix.len()..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') && end > 0 {
            out.insert(&after[..end]);
        }
        rest = &after[end..];
    }
    out
}

/// Names a file reaches through `super::` when its parent is the `stages` module: plain paths
/// and the first segment of each path in a `use super::{…}` group.
fn super_names(code: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = paths_after(code, "super::")
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut rest = code;
    while let Some(p) = rest.find("super::{") {
        let group = &rest[p + 8..];
        let end = group.find('}').unwrap_or(group.len());
        for item in group[..end].split(',') {
            let first = item.trim().split("::").next().unwrap_or("").trim();
            if !first.is_empty() {
                out.insert(first.to_string());
            }
        }
        rest = &group[end..];
    }
    out
}

#[test]
fn no_stage_module_imports_another() {
    let stages = workspace().join("runner/src/stages");
    let kinds: BTreeSet<String> = std::fs::read_dir(&stages)
        .expect("runner/src/stages")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n != "mod.rs"))
        .map(|p| {
            p.file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        kinds.contains("pretrain") && kinds.contains("probe"),
        "{kinds:?}"
    );
    let mut found = Vec::new();
    for file in rust_files(&stages) {
        let rel = file.strip_prefix(&stages).expect("under stages/");
        let own = rel
            .components()
            .next()
            .expect("a first component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if own == "mod" {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&file).expect("readable"));
        let mut named: BTreeSet<String> = paths_after(&code, "crate::stages::")
            .into_iter()
            .map(str::to_string)
            .collect();
        // `super::` means `stages` only in a stage's top file (stages/x.rs, stages/x/mod.rs).
        let top = rel.components().count() == 1 || rel.ends_with("mod.rs");
        if top && rel.components().count() <= 2 {
            named.extend(super_names(&code));
        }
        for n in named {
            if kinds.contains(&n) && n != own {
                found.push(format!("{} uses stage module `{n}`", rel.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "stage modules import each other:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn top_level_modules_have_no_import_circles() {
    let src = workspace().join("runner/src");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("runner/src")
        .map(|e| e.expect("entry").path())
        .map(|p| {
            p.file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|m| m != "lib" && m != "main")
        .collect();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).expect("under src/");
        let module = rel
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&file).expect("readable"));
        for used in paths_after(&code, "crate::") {
            if used != module && modules.contains(used) {
                edges
                    .entry(module.clone())
                    .or_default()
                    .insert(used.to_string());
            }
        }
    }
    assert!(
        edges.contains_key("stages"),
        "the scan found no imports: {edges:?}"
    );
    // A circle exists when some edge a → b has a path back b → … → a.
    let reaches = |from: &str, to: &str| -> Option<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![vec![from.to_string()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty").clone();
            if last == to {
                return Some(path);
            }
            if !seen.insert(last.clone()) {
                continue;
            }
            for n in edges.get(&last).into_iter().flatten() {
                let mut p = path.clone();
                p.push(n.clone());
                stack.push(p);
            }
        }
        None
    };
    let mut circles = Vec::new();
    for (a, outs) in &edges {
        for b in outs {
            if let Some(back) = reaches(b, a) {
                circles.push(format!("{a} → {}", back.join(" → ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n  {}",
        circles.join("\n  ")
    );
}

#[test]
fn no_function_in_runner_is_longer_than_150_lines() {
    let root = workspace().join("runner");
    let mut long = Vec::new();
    let mut count = 0;
    for file in rust_files(&root) {
        if file.components().any(|c| c.as_os_str() == "target") {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(&file).expect("readable"));
        for (name, line, len) in functions(&code) {
            count += 1;
            if len > MAX_FUNCTION_LINES {
                let rel = file.strip_prefix(&root).expect("under runner/");
                long.push(format!("{}:{line} `{name}`: {len} lines", rel.display()));
            }
        }
    }
    assert!(count > 500, "the scan found only {count} functions");
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them by concern):\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn the_lexer_ignores_comments_strings_and_literals() {
    let src = "fn a() { let s = \"}}\"; let c = '}'; let r = r#\"{\"#; // }\n /* { */ }\nfn b<'x>(v: &'x str) {}\n";
    let code = code_only(src);
    let f = functions(&code);
    assert_eq!(
        f,
        vec![("a".to_string(), 1, 2), ("b".to_string(), 3, 1)],
        "{code}"
    );
    assert_eq!(
        paths_after("use crate::stages::probe; x::crate::no", "crate::"),
        BTreeSet::from(["stages"])
    );
    assert_eq!(
        super_names("use super::{mix_seed, probe::fit, Metrics};"),
        BTreeSet::from(["mix_seed".into(), "probe".into(), "Metrics".into()])
    );
}
