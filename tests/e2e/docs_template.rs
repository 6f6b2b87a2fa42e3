//! The documentation's examples work: the plugin template (`docs/plugin-template/`) builds out
//! of tree against `pretext-plugin` with its committed Cargo.lock, its unit tests pass, its
//! objective and augmentation run in a pipeline (a Tiny-style one and the template's own
//! `pipeline.toml`), and the built-in plugins' parameters match the reference page
//! `docs/reference/plugins.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use pretext::plugins::{Registry, SearchPath};

use crate::support::{
    dylib_name, entries, expect_statuses, mnist, pretext, profile_dir, store, tempdir, toml_path,
    workspace,
};

/// The template crate.
fn template_dir() -> PathBuf {
    workspace().join("docs").join("plugin-template")
}

/// Runs cargo on the template (offline, with its own Cargo.lock, into `target/docs-template`).
fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = template_dir().join("Cargo.toml");
    let out = Command::new(&cargo)
        .args(args)
        .arg("--quiet")
        .arg("--offline")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(workspace().join("target").join("docs-template"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo on {}: {e}", manifest.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo {}` on the plugin template {} failed (if Cargo.lock is out of date, run \
             `cargo update --offline --manifest-path {}` and commit it):\n{}{}",
            args.join(" "),
            manifest.display(),
            manifest.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The template's library, built (and unit-tested) once per test process.
fn template_plugin() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        cargo(&["build"])?;
        cargo(&["test"])?;
        let lib = workspace()
            .join("target/docs-template/debug")
            .join(dylib_name("my_ssl_plugin"));
        if lib.is_file() {
            Ok(lib)
        } else {
            Err(format!(
                "cargo built the template but {} is missing",
                lib.display()
            ))
        }
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A tiny pipeline (like `support::Tiny`) that uses the template's objective and augmentation.
fn tiny_pipeline(lib: &Path) -> String {
    let (images, labels) = mnist();
    format!(
        r#"[pipeline]
name = "template"
seed = 7
plugin_paths = [{lib}]

[stages.data]
kind = "ingest"
source = {{ format = "idx", images = {images}, labels = {labels} }}
split = {{ train = 0.8, test = 0.2 }}
limit = 600

[stages.views]
kind = "augment"
input = "data"
views = [
  [{{ name = "random_resized_crop", scale = [0.4, 1.0] }}, "solarize"],
  [{{ name = "random_resized_crop", scale = [0.4, 1.0] }}, {{ name = "solarize", p = 1.0, threshold = 0.7 }}],
]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = {{ plugin = "align_uniform", t = 2.0, projector_hidden = 64, projector_dim = 32 }}
model = {{ arch = "mlp", hidden = [64], embed_dim = 32 }}
epochs = 2
batch_size = 128

[stages.eval]
kind = "probe"
encoder = "ssl"
data = "data"
methods = ["linear", "knn"]
linear = {{ epochs = 5 }}
"#,
        lib = toml_path(lib),
        images = toml_path(&images),
        labels = toml_path(&labels),
    )
}

#[test]
fn plugin_template_builds_out_of_tree_and_runs_in_a_pipeline() {
    let lib = template_plugin();
    let dir = tempdir();
    let p = dir.path().join("pipeline.toml");
    std::fs::write(&p, tiny_pipeline(lib)).unwrap();
    let p = p.display().to_string();

    pretext(dir.path(), &["validate", &p])
        .expect_code(0)
        .expect_stdout_has(&["ok:"]);
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(0);
    expect_statuses(
        &run,
        &[
            ("data", "ran"),
            ("views", "ran"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );

    // The objective trained and reported its two terms; the lockfile records both plugins.
    let entry = entries(&store(dir.path()), "pretrain");
    assert_eq!(entry.len(), 1, "one pretrain entry");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry[0].join("metrics.json")).unwrap())
            .unwrap();
    for m in ["loss", "objective.align", "objective.uniform"] {
        assert!(
            metrics[m].as_f64().is_some_and(f64::is_finite),
            "metric `{m}` missing or not finite: {metrics}"
        );
    }
    let lock = std::fs::read_to_string(dir.path().join("pretext.lock")).unwrap();
    for name in ["\"align_uniform\"", "\"solarize\""] {
        assert!(lock.contains(name), "the lockfile records {name}:\n{lock}");
    }

    // Parameters are checked by the plugin at validation time, with a did-you-mean.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        tiny_pipeline(lib).replace("t = 2.0,", "temperature = 2.0,"),
    )
    .unwrap();
    pretext(dir.path(), &["validate", &bad.display().to_string()])
        .expect_code(2)
        .expect_stderr_has(&["align_uniform", "unknown parameter `temperature`"]);

    // `pretext plugins` lists what the library provides.
    let pd = dir.path().join("plugin-dir");
    std::fs::create_dir_all(&pd).unwrap();
    std::fs::copy(lib, pd.join(lib.file_name().unwrap())).unwrap();
    pretext(
        dir.path(),
        &["plugins", "--plugin-dir", &pd.display().to_string()],
    )
    .expect_code(0)
    .expect_stdout_has(&[
        "my-ssl-plugin",
        "objective     align_uniform",
        "augmentation  solarize",
    ]);
}

#[test]
fn plugin_template_pipeline_file_runs() {
    // The template's own pipeline.toml, copied out (runs write pretext.lock beside the file)
    // and pointed at the built library and the datasets; shortened with --set.
    let lib = template_plugin();
    let dir = tempdir();
    let p = dir.path().join("pipeline.toml");
    std::fs::copy(template_dir().join("pipeline.toml"), &p).unwrap();
    let (images, labels) = mnist();
    let sets = [
        format!("pipeline.plugin_paths=[{}]", toml_path(lib)),
        format!("stages.data.source.images={}", toml_path(&images)),
        format!("stages.data.source.labels={}", toml_path(&labels)),
        "stages.data.limit=600".to_string(),
        "stages.ssl.epochs=1".to_string(),
    ];
    let mut args = vec!["run".to_string(), p.display().to_string()];
    for s in &sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pretext(dir.path(), &args).expect_code(0);
}

/// The parameter names in the first column of each row of a Markdown table (every name in
/// backticks, so a row can document `a` / `b` together).
fn table_keys(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.trim().strip_prefix('|'))
        .filter_map(|rest| rest.split('|').next())
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `### `name`` sections of `docs/reference/plugins.md` and the keys of their tables.
fn documented_plugins() -> BTreeMap<String, BTreeSet<String>> {
    let path = workspace().join("docs/reference/plugins.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            current = Some(h.trim().trim_matches('`').to_string());
            out.entry(current.clone().unwrap()).or_default();
        } else if line.starts_with("## ") {
            current = None;
        } else if let Some(name) = &current {
            let section = out.get_mut(name).expect("inserted at its heading");
            section.push_str(line);
            section.push('\n');
        }
    }
    out.into_iter()
        .map(|(name, body)| (name, table_keys(&body)))
        .collect()
}

#[test]
fn builtin_plugin_parameters_match_the_reference() {
    // The built-in libraries next to the pretext binary, as `pretext plugins` finds them.
    let search = SearchPath {
        builtin_dirs: vec![profile_dir()],
        ..SearchPath::default()
    };
    let reg = Registry::discover(&search).expect("the built-in plugins load");
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, found) in &reg.objectives {
        let doc = unsafe { found.entry.params_doc.as_str() };
        actual.insert(name.clone(), table_keys(doc));
    }
    for (name, found) in &reg.augmentations {
        let doc = unsafe { found.entry.params_doc.as_str() };
        actual.insert(name.clone(), table_keys(doc));
    }
    for keys in actual.values_mut() {
        keys.remove("key");
    }
    assert!(
        actual.contains_key("simclr") && actual.contains_key("random_resized_crop"),
        "the built-in plugins were not found in {}: {:?}",
        profile_dir().display(),
        actual.keys().collect::<Vec<_>>()
    );
    let mut documented = documented_plugins();
    for keys in documented.values_mut() {
        keys.remove("key");
    }
    let mut problems = Vec::new();
    for (name, keys) in &actual {
        match documented.get(name) {
            None => problems.push(format!("`{name}` has no `### {name}` section")),
            Some(doc) if doc != keys => problems.push(format!(
                "`{name}`: the plugin documents {keys:?}, the page {doc:?}"
            )),
            Some(_) => {}
        }
    }
    for name in documented.keys() {
        if !actual.contains_key(name) {
            problems.push(format!(
                "`{name}` is documented but no built-in plugin provides it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/reference/plugins.md and the built-in plugins' PARAMS_DOC differ:\n  {}",
        problems.join("\n  ")
    );
}

/// The fields of each `struct Ptx…` in `text`, in order: Rust (`pub name: T,`) or C (`T name;`,
/// `T (*name)(…);`, `T name[N];`). Comments are ignored.
fn struct_fields(text: &str, c: bool) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.split("//").next().unwrap_or("");
        let line = match (line.find("/*"), line.find("*/")) {
            (Some(a), Some(b)) if b > a => format!("{}{}", &line[..a], &line[b + 2..]),
            (Some(a), None) => line[..a].to_string(),
            _ => line.to_string(),
        };
        let line = line.trim();
        let opener = if c {
            "typedef struct Ptx"
        } else {
            "pub struct Ptx"
        };
        if let Some(rest) = line.strip_prefix(opener) {
            if line.ends_with('{') {
                let name = rest.trim_end_matches('{').trim();
                current = Some((format!("Ptx{name}"), Vec::new()));
                pending.clear();
            }
            continue;
        }
        let Some((name, fields)) = current.as_mut() else {
            continue;
        };
        if line.starts_with('}') {
            out.insert(name.clone(), std::mem::take(fields));
            current = None;
            continue;
        }
        if c {
            pending.push_str(line);
            pending.push(' ');
            if !line.ends_with(';') {
                continue;
            }
            let decl = std::mem::take(&mut pending);
            let field = match decl.find("(*") {
                Some(i) => decl[i + 2..].split(')').next().unwrap_or("").to_string(),
                None => decl
                    .trim_end_matches([';', ' '])
                    .split(|ch: char| ch.is_whitespace() || ch == '*')
                    .next_back()
                    .unwrap_or("")
                    .split('[')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            };
            fields.push(field);
        } else if let Some(rest) = line.strip_prefix("pub ") {
            if let Some((field, _)) = rest.split_once(':') {
                if !field.contains(' ') && !field.contains('(') {
                    fields.push(field.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn c_header_matches_the_rust_abi() {
    let rust = std::fs::read_to_string(workspace().join("plugins/sdk/src/abi.rs")).unwrap();
    let header =
        std::fs::read_to_string(workspace().join("docs/plugins/pretext_plugin.h")).unwrap();
    let (rust, c) = (struct_fields(&rust, false), struct_fields(&header, true));
    assert!(
        rust.len() >= 10,
        "found only {} structs in abi.rs: {rust:?}",
        rust.len()
    );
    assert_eq!(
        rust, c,
        "docs/plugins/pretext_plugin.h no longer matches plugins/sdk/src/abi.rs (left: Rust, \
         right: C): update the header (and docs/plugins/abi.md)"
    );
    let version = rust_const(
        &std::fs::read_to_string(workspace().join("plugins/sdk/src/abi.rs")).unwrap(),
        "ABI_VERSION",
    );
    assert!(
        header.contains(&format!("#define PTX_ABI_VERSION {version}u")),
        "the header's PTX_ABI_VERSION is not {version}"
    );
}

/// The value of `pub const NAME: T = value;` in Rust source.
fn rust_const(text: &str, name: &str) -> String {
    let decl = format!("pub const {name}:");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&decl))
        .and_then(|rest| rest.split('=').nth(1))
        .map(|v| v.trim().trim_end_matches(';').to_string())
        .unwrap_or_else(|| panic!("no `pub const {name}` in abi.rs"))
}

#[test]
fn c_example_plugin_builds_and_runs_where_a_c_compiler_exists() {
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!(
            "no C compiler (`{}`): skipping the C plugin example",
            cc.to_string_lossy()
        );
        return;
    }
    let dir = tempdir();
    let lib = dir.path().join("plugins").join(dylib_name("invert"));
    std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
    let docs = workspace().join("docs/plugins");
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I"])
        .arg(&docs)
        .arg("-o")
        .arg(&lib)
        .arg(docs.join("c-example/invert.c"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compiling docs/plugins/c-example/invert.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (images, labels) = mnist();
    let p = dir.path().join("pipeline.toml");
    std::fs::write(
        &p,
        format!(
            r#"[pipeline]
name = "c-plugin"
plugin_paths = [{lib}]

[stages.data]
kind = "ingest"
source = {{ format = "idx", images = {images}, labels = {labels} }}
limit = 300

[stages.views]
kind = "augment"
input = "data"
views = [["invert"], [{{ name = "invert", p = 0.9 }}]]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = {{ plugin = "simclr", projector_hidden = 32, projector_dim = 16 }}
model = {{ hidden = [32], embed_dim = 16 }}
epochs = 1
batch_size = 100
"#,
            lib = toml_path(&lib),
            images = toml_path(&images),
            labels = toml_path(&labels),
        ),
    )
    .unwrap();
    let p = p.display().to_string();
    pretext(dir.path(), &["run", &p]).expect_code(0);
    // Its parameter check reaches the user.
    let bad = std::fs::read_to_string(&p)
        .unwrap()
        .replace("p = 0.9", "p = 2");
    std::fs::write(&p, bad).unwrap();
    pretext(dir.path(), &["validate", &p])
        .expect_code(2)
        .expect_stderr_has(&["invert: parameter `p` must be between 0 and 1"]);
}

/// The Rust code blocks of a section of a Markdown page, from its `## <heading prefix>` to the
/// next `## `.
fn rust_blocks(page: &str, heading: &str) -> Vec<String> {
    let start = page
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("no `## {heading}` section"));
    let section = &page[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .split("```rust\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(str::to_string)
        .collect()
}

#[test]
fn plugin_guide_new_objective_builds_and_trains() {
    // Step 4 of docs/plugins.md, done the way a reader does it: copy the template, add the
    // guide's objective (its first code block) as src/cosine.rs, register it (the second code
    // block replaces the template's export_plugin!), build, and train with it.
    let guide = std::fs::read_to_string(workspace().join("docs/plugins.md")).unwrap();
    let blocks = rust_blocks(&guide, "4. Write your own objective");
    assert_eq!(
        blocks.len(),
        2,
        "step 4 has the objective and the registration"
    );
    let dir = tempdir();
    let krate = dir.path().join("my-plugin");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    for file in ["Cargo.lock", "src/objective.rs", "src/augmentation.rs"] {
        std::fs::copy(template_dir().join(file), krate.join(file)).unwrap();
    }
    let sdk = workspace().join("plugins/sdk");
    let manifest = std::fs::read_to_string(template_dir().join("Cargo.toml"))
        .unwrap()
        .replace("\"../../plugins/sdk\"", &toml_path(&sdk));
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(krate.join("src/cosine.rs"), &blocks[0]).unwrap();
    let lib = std::fs::read_to_string(template_dir().join("src/lib.rs")).unwrap();
    let export = lib
        .find("pretext_plugin::export_plugin!")
        .expect("the template exports its plugin");
    std::fs::write(
        krate.join("src/lib.rs"),
        format!("{}{}", &lib[..export], blocks[1]),
    )
    .unwrap();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = workspace().join("target").join("docs-guide");
    let out = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--offline",
            "--locked",
            "--manifest-path",
        ])
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the objective of docs/plugins.md step 4 does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = target.join("debug").join(dylib_name("my_ssl_plugin"));
    let p = dir.path().join("pipeline.toml");
    let text = tiny_pipeline(&built).replace(
        "{ plugin = \"align_uniform\", t = 2.0, projector_hidden = 64, projector_dim = 32 }",
        "{ plugin = \"cosine_var\" }",
    );
    assert!(text.contains("cosine_var"));
    std::fs::write(&p, text).unwrap();
    let p = p.display().to_string();
    let run = pretext(dir.path(), &["run", &p]);
    run.expect_code(0);
    expect_statuses(
        &run,
        &[
            ("data", "ran"),
            ("views", "ran"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );
}
