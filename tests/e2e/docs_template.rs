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
