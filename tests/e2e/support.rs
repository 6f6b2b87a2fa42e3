//! Shared helpers of the e2e tests: locating the workspace and the built `pretext` binary,
//! running it and capturing its output, writing the tiny test pipeline, reading a store, and
//! building the fixture plugin crates under `tests/fixtures/plugins/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The workspace root (the parent of the `tests/` package).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent folder")
        .to_path_buf()
}

/// `target/<profile>`: the test executable is `target/<profile>/deps/e2e-<hash>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let deps = exe.parent().expect("the test executable has a folder");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// The `pretext` binary next to the test executable's `deps/` folder.
pub fn pretext_bin() -> PathBuf {
    let bin = profile_dir().join(format!("pretext{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the pretext binary {} does not exist: run `cargo build --workspace` first \
         (the e2e tests run the real binary and its plugin libraries)",
        bin.display()
    );
    bin
}

/// A shared library file name for a library called `name` (`libname.so` on Linux).
pub fn dylib_name(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The embedded MNIST test split: (images, labels), absolute paths.
pub fn mnist() -> (PathBuf, PathBuf) {
    let dir = workspace().join("datasets").join("mnist");
    (
        dir.join("t10k-images-idx3-ubyte.gz"),
        dir.join("t10k-labels-idx1-ubyte.gz"),
    )
}

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(args: Vec<String>, out: Output) -> Run {
        let run = Run {
            args,
            // A signal-killed process has no code; -1 never matches an expected code.
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        run.assert_no_panic();
        run
    }

    /// A Rust panic message never reaches the user, whatever the outcome.
    pub fn assert_no_panic(&self) {
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            assert!(
                !text.contains("panicked at"),
                "`pretext {}` printed a panic on {name}:\n{}",
                self.args.join(" "),
                self.describe()
            );
        }
    }

    /// The command, its exit code and both streams, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "$ pretext {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts the exit code; returns `self` for chaining.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.describe());
        self
    }

    /// Asserts that stderr contains every one of `needles`.
    #[track_caller]
    pub fn expect_stderr_has(&self, needles: &[&str]) -> &Run {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}\n{}",
                self.describe()
            );
        }
        self
    }

    /// Asserts that stdout contains every one of `needles`.
    #[track_caller]
    pub fn expect_stdout_has(&self, needles: &[&str]) -> &Run {
        for n in needles {
            assert!(
                self.stdout.contains(n),
                "stdout lacks {n:?}\n{}",
                self.describe()
            );
        }
        self
    }
}

/// A `pretext` command in `cwd` with a clean environment for the settings pretext reads.
pub fn command(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(pretext_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("PRETEXT_LOG")
        .env_remove("PRETEXT_PLUGIN_PATH")
        .env_remove("PRETEXT_MEMORY_BUDGET")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    cmd
}

/// Runs `pretext <args>` in `cwd` to completion and captures its output. Fails the test if
/// the output contains a panic message.
pub fn pretext(cwd: &Path, args: &[&str]) -> Run {
    let out = command(cwd, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", pretext_bin().display()));
    Run::from_output(args.iter().map(|s| s.to_string()).collect(), out)
}

/// [`pretext`] with extra environment variables.
pub fn pretext_with(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = command(cwd, args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", pretext_bin().display()));
    Run::from_output(args.iter().map(|s| s.to_string()).collect(), out)
}

/// A fresh temporary folder.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pretext-e2e-")
        .tempdir()
        .expect("create a temporary folder")
}

/// The tiny pipeline the tests run: ingest (MNIST, `limit` samples) → two augmented views →
/// SimCLR-style pretraining of a small MLP → linear + kNN probes. Stage names: `data`,
/// `views`, `ssl`, `eval`.
#[derive(Debug, Clone)]
pub struct Tiny {
    pub name: String,
    pub limit: usize,
    pub epochs: usize,
    /// The objective's inline table, e.g. `{ plugin = "simclr", temperature = 0.5 }`.
    pub objective: String,
    pub plugin_paths: Vec<PathBuf>,
}

impl Default for Tiny {
    fn default() -> Self {
        Tiny {
            name: "tiny".into(),
            limit: 600,
            epochs: 1,
            objective: simclr_objective("simclr"),
            plugin_paths: Vec::new(),
        }
    }
}

/// The objective table for a SimCLR-like objective called `name`, with a small projector.
pub fn simclr_objective(name: &str) -> String {
    format!(
        "{{ plugin = \"{name}\", temperature = 0.5, projector_hidden = 64, projector_dim = 32 }}"
    )
}

/// `[pipeline]` named `name` and an ingest stage `data` of the first `limit` embedded MNIST
/// images (80/20 split). It ends inside `[stages.data]`: more keys of that stage may follow.
pub fn mnist_head(name: &str, seed: u64, limit: usize) -> String {
    let (images, labels) = mnist();
    format!(
        r#"[pipeline]
name = "{name}"
seed = {seed}

[stages.data]
kind = "ingest"
source = {{ format = "idx", images = {}, labels = {} }}
split = {{ train = 0.8, test = 0.2 }}
limit = {limit}
"#,
        toml_path(&images),
        toml_path(&labels),
    )
}

/// Two views of random crops (scale 0.5–1), the second with Gaussian noise: a TOML array.
pub const TWO_CROPS: &str = r#"[
  [{ name = "random_resized_crop", scale = [0.5, 1.0] }],
  [{ name = "random_resized_crop", scale = [0.5, 1.0] }, { name = "gaussian_noise", std = 0.05 }],
]"#;

/// The start of a pipeline named `name`: 600 embedded MNIST images declared 28x28 (`data`) and
/// an augment stage `views` with the given views (each a TOML array of augmentations).
pub fn mnist_views_pipeline(name: &str, seed: u64, views: &[&str]) -> String {
    format!(
        r#"{}resize = [28, 28]

[stages.views]
kind = "augment"
input = "data"
views = [
  {}
]
"#,
        mnist_head(name, seed, 600),
        views.join(",\n  ")
    )
}

/// The start of a pipeline named `name` that trains one epoch of every encoder: 160 embedded
/// MNIST images (`data`), two views of crops, one with noise (`two`), and one view (`one`).
pub fn tiny_mnist_pipeline(name: &str, seed: u64) -> String {
    format!(
        r#"{}
[stages.two]
kind = "augment"
input = "data"
views = {TWO_CROPS}

[stages.one]
kind = "augment"
input = "data"
views = [[{{ name = "random_resized_crop", scale = [0.5, 1.0] }}]]

"#,
        mnist_head(name, seed, 160),
    )
}

/// A TOML basic string holding `p` (backslashes and quotes escaped).
pub fn toml_path(p: &Path) -> String {
    let s = p.display().to_string();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Tiny {
    pub fn toml(&self) -> String {
        let (images, labels) = mnist();
        let plugin_paths = if self.plugin_paths.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self.plugin_paths.iter().map(|p| toml_path(p)).collect();
            format!("plugin_paths = [{}]\n", list.join(", "))
        };
        format!(
            r#"# The e2e tests' tiny pipeline.
[pipeline]
name = "{name}"
seed = 7
{plugin_paths}
[stages.data]
kind = "ingest"
source = {{ format = "idx", images = {images}, labels = {labels} }}
split = {{ train = 0.8, test = 0.2 }}
limit = {limit}

[stages.views]
kind = "augment"
input = "data"
views = [
  [{{ name = "random_resized_crop", scale = [0.4, 1.0] }}, {{ name = "gaussian_noise", std = 0.05 }}],
  [{{ name = "random_resized_crop", scale = [0.4, 1.0] }}, {{ name = "rotate", degrees = 10 }}],
]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = {objective}
model = {{ arch = "mlp", hidden = [64], embed_dim = 32 }}
epochs = {epochs}
batch_size = 128

[stages.eval]
kind = "probe"
encoder = "ssl"
data = "data"
methods = ["linear", "knn"]
linear = {{ epochs = 5 }}
"#,
            name = self.name,
            images = toml_path(&images),
            labels = toml_path(&labels),
            limit = self.limit,
            objective = self.objective,
            epochs = self.epochs,
        )
    }

    /// Writes the pipeline to `<dir>/pipeline.toml` and returns that path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("pipeline.toml");
        std::fs::write(&path, self.toml()).expect("write the pipeline file");
        path
    }
}

/// The stage statuses (`ran` / `cached`) in the summary table printed by `run` and `show`.
/// Assert that the encoder a pretrain entry saved holds the encoder's tensors only (names
/// `encoder.*`, plus `__`-prefixed metadata): nothing of the objective, predictor or teacher.
pub fn assert_encoder_only(entry: &Path) {
    let file = entry.join("encoder.safetensors");
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let names: Vec<&String> = header.as_object().unwrap().keys().collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("encoder.") || n.starts_with("__")),
        "{}: {names:?}",
        file.display()
    );
}

pub fn statuses(stdout: &str) -> BTreeMap<String, String> {
    const KINDS: [&str; 7] = [
        "ingest", "curate", "augment", "pretrain", "probe", "finetune", "ood_eval",
    ];
    stdout
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            match cells.as_slice() {
                [name, kind, status, ..] if KINDS.contains(kind) => {
                    Some((name.to_string(), status.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// `[(stage, status)]` as a map, for comparisons with [`statuses`].
pub fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Asserts the summary table of a `run`: every stage with the given status.
#[track_caller]
pub fn expect_statuses(run: &Run, pairs: &[(&str, &str)]) {
    assert_eq!(
        statuses(&run.stdout),
        expected(pairs),
        "stage statuses in the summary table\n{}",
        run.describe()
    );
}

/// The statuses recorded in the run log (`show --json`).
pub fn show_statuses(dir: &Path, pipeline: &Path) -> BTreeMap<String, String> {
    let show = pretext(dir, &["show", "--json", &pipeline.display().to_string()]);
    show.expect_code(0);
    let log: serde_json::Value = serde_json::from_str(&show.stdout)
        .unwrap_or_else(|e| panic!("show --json is not JSON: {e}\n{}", show.describe()));
    log["stages"]
        .as_object()
        .unwrap_or_else(|| panic!("show --json has no `stages` object\n{}", show.describe()))
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                s["status"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// The default store of a pipeline in `dir`.
pub fn store(dir: &Path) -> PathBuf {
    dir.join(".pretext")
}

/// Complete-looking entries (folders holding `entry.json`) under `<store>/objects/<kind>/`.
pub fn entries(store: &Path, kind: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(store.join("objects").join(kind)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("entry.json").is_file())
        .collect();
    v.sort();
    v
}

/// Items in `<store>/tmp/` other than dot-files (pretext probes writability with
/// `.probe-*` folders there).
pub fn pending(store: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(store.join("tmp")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// The shortened stage keys (`plan` prints the first 12 hex characters) by stage name.
pub fn plan_keys(plan_stdout: &str) -> BTreeMap<String, String> {
    plan_stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            match cells.as_slice() {
                [name, _kind, key, ..] => {
                    Some((name.to_string(), key.trim_end_matches('…').to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// The `plan` line of one stage.
#[track_caller]
pub fn plan_line<'a>(plan: &'a Run, stage: &str) -> &'a str {
    plan.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("plan names no stage `{stage}`\n{}", plan.describe()))
}

/// The fixture plugin libraries, built once per test run.
pub struct Fixtures {
    pub external_objective: PathBuf,
    pub panicky: PathBuf,
    pub abi_mismatch: PathBuf,
    /// A library built for plugin ABI v1 (an older version than this pretext speaks).
    pub abi_v1: PathBuf,
    pub no_entry: PathBuf,
}

/// Builds the fixture plugin crates (standalone packages, not workspace members) into
/// `target/fixture-plugins` with the cargo running the tests, once per test process.
pub fn fixtures() -> &'static Fixtures {
    static BUILT: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target = workspace().join("target").join("fixture-plugins");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let build = |package: &str, lib: &str| -> Result<PathBuf, String> {
            let manifest = workspace()
                .join("tests/fixtures/plugins")
                .join(package)
                .join("Cargo.toml");
            let out = Command::new(&cargo)
                .arg("build")
                .arg("--quiet")
                .arg("--offline")
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(&target)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run cargo to build {}: {e}", manifest.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "building the fixture plugin {} failed:\n{}",
                    manifest.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let path = target.join("debug").join(dylib_name(lib));
            if !path.is_file() {
                return Err(format!(
                    "cargo built {package} but {} is missing",
                    path.display()
                ));
            }
            Ok(path)
        };
        Ok(Fixtures {
            external_objective: build("external-objective", "external_objective")?,
            panicky: build("panicky", "panicky")?,
            abi_mismatch: build("abi-mismatch", "abi_mismatch")?,
            abi_v1: build("abi-v1", "abi_v1")?,
            no_entry: build("no-entry", "no_entry")?,
        })
    });
    match built {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    }
}

/// Waits for `child` (stderr piped) and returns its exit code and stderr; kills it and fails
/// the test if it is still running after `limit` (`what` names it in the message).
pub fn finish_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> (i32, String) {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for pretext") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The JSON file at `p`.
pub fn read_json(p: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

/// Writes `text` as `dir/pipeline.toml`; returns its path as an argument.
pub fn write_pipeline(dir: &Path, text: &str) -> String {
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Epochs done in the (only) pretrain checkpoint of `store`, if there is one.
pub fn checkpoint_epochs(store: &Path) -> Option<u64> {
    let dir = store.join("checkpoints").join("pretrain");
    let meta = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .next()?
        .path()
        .join("checkpoint.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(meta).ok()?).ok()?;
    v["epochs_done"].as_u64()
}

/// Starts `pretext run <pipeline>` in `dir` (its output in `dir/killed.log`), kills it as soon
/// as its pretrain checkpoint holds `epochs` epochs, and returns how many the checkpoint holds
/// after the kill. Fails the test when the run ends first or no checkpoint comes in 300 s.
pub fn kill_after_checkpoint(dir: &Path, pipeline: &str, epochs: u64) -> u64 {
    let st = store(dir);
    let log_path = dir.join("killed.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = command(dir, &["run", pipeline])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start pretext run");
    let start = std::time::Instant::now();
    while checkpoint_epochs(&st).is_none_or(|e| e < epochs) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before a checkpoint of {epochs} epochs\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "timed out waiting for a checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    checkpoint_epochs(&st).expect("the checkpoint survives the kill")
}
