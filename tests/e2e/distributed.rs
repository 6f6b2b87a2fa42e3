//! Data-parallel pretraining under `mpirun` (built with `--features mpi`; CI installs Open MPI
//! and runs these): two ranks with half of every batch each reproduce the single process with
//! the whole batch, for every objective family and for the quickstart; the stage keys and
//! `pretext.lock` do not depend on the number of ranks; a rank that is killed, or an error on
//! rank 0 alone, ends every rank in bounded time with a clear message and commits nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Upper bound of every wait in this file.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// `mpirun -np <ranks> pretext <args>` in `cwd`, with the environment `command` gives a
/// single run. Open MPI refuses root and counts slots by cores unless told otherwise.
fn mpirun_command(cwd: &Path, ranks: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-np", &ranks.to_string()])
        .arg(pretext_bin())
        .args(args)
        .current_dir(cwd)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("PRETEXT_LOG")
        .env_remove("PRETEXT_PLUGIN_PATH")
        .env_remove("PRETEXT_MEMORY_BUDGET")
        .env_remove("RAYON_NUM_THREADS")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    cmd
}

fn mpirun(cwd: &Path, ranks: usize, args: &[&str]) -> Run {
    let out = mpirun_command(cwd, ranks, args)
        .output()
        .expect("cannot start mpirun: install Open MPI (apt install openmpi-bin libopenmpi-dev)");
    let mut all = vec!["(mpirun)".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    Run::from_output(all, out)
}

/// Every pretrain entry of the store in `dir`, by stage name.
fn pretrain_entries(dir: &Path) -> BTreeMap<String, PathBuf> {
    entries(&store(dir), "pretrain")
        .into_iter()
        .map(|e| {
            let meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(e.join("entry.json")).unwrap())
                    .unwrap();
            (meta["stage"].as_str().unwrap().to_string(), e)
        })
        .collect()
}

/// The encoder's parameters (not its batch-norm running statistics) as one flat vector.
fn flat_encoder(entry: &Path) -> Vec<f64> {
    let bytes = std::fs::read(entry.join("encoder.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| !n.contains("running"))
        .cloned()
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let t = st.tensor(&n).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{n}");
        out.extend(
            t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64),
        );
    }
    out
}

/// ‖a − b‖ / ‖a‖ over the flattened encoders of two entries.
fn encoder_rel_diff(a: &Path, b: &Path) -> f64 {
    let (fa, fb) = (flat_encoder(a), flat_encoder(b));
    assert_eq!(fa.len(), fb.len(), "{} vs {}", a.display(), b.display());
    let num: f64 = fa.iter().zip(&fb).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = fa.iter().map(|x| x * x).sum();
    (num / den).sqrt()
}

/// The last epoch's training loss and gradient norm in an entry's `history.json`.
fn final_loss(entry: &Path) -> (f64, f64) {
    let h: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry.join("history.json")).unwrap())
            .unwrap();
    let last = h.as_array().unwrap().last().unwrap();
    (
        last["loss"].as_f64().unwrap(),
        last["grad_norm"].as_f64().unwrap(),
    )
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(1e-12)
}

/// Stage → key, as `pretext.lock` in `dir` pins them.
fn locked_keys(dir: &Path) -> BTreeMap<String, String> {
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pretext.lock")).unwrap()).unwrap();
    let stages = lock["pipelines"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()["stages"]
        .as_object()
        .unwrap();
    assert!(!stages.is_empty());
    stages
        .iter()
        .map(|(name, s)| (name.clone(), s["key"].as_str().unwrap().to_string()))
        .collect()
}

/// Runs `pipeline` (written into two folders) once as one process and once as two ranks, and
/// checks that both committed the same keys and the same `pretext.lock`; returns the folders.
fn one_and_two_ranks(pipeline: &str, extra: &[&str]) -> (tempfile::TempDir, tempfile::TempDir) {
    let (one, two) = (tempdir(), tempdir());
    for dir in [&one, &two] {
        std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    }
    let mut args = vec!["run", "p.toml"];
    args.extend_from_slice(extra);
    pretext(one.path(), &args).expect_code(0);
    let run = mpirun(two.path(), 2, &args);
    run.expect_code(0);
    // Rank 1 follows quietly: one summary, printed by rank 0.
    assert_eq!(
        run.stdout.matches("Lockfile").count(),
        1,
        "{}",
        run.describe()
    );
    let (a, b) = (pretrain_entries(one.path()), pretrain_entries(two.path()));
    assert_eq!(
        a.values()
            .map(|e| e.file_name().unwrap().to_owned())
            .collect::<Vec<_>>(),
        b.values()
            .map(|e| e.file_name().unwrap().to_owned())
            .collect::<Vec<_>>(),
        "the stage keys do not depend on the number of ranks"
    );
    if extra.is_empty() {
        // The lockfile pins the same key for every stage (the outputs' digests differ in
        // their last bits: floating-point sums in another order).
        assert_eq!(locked_keys(one.path()), locked_keys(two.path()));
    }
    for dir in [&two] {
        assert!(pending(&store(dir.path())).is_empty());
    }
    (one, two)
}

/// One pretrain stage per objective family (and per encoder architecture), each on the
/// 128-sample train split with a global batch of 64: two steps (CLIP with the captions of the
/// same images). I-JEPA saves its EMA
/// teacher, which at the default momentum (0.996) would hardly move in two steps: a momentum
/// of 0.5 makes the compared encoder follow the student's updates. SGD with momentum: with Adam,
/// parameters whose true gradient is about zero (a bias right before batch norm) move by ±lr
/// on the sign of rounding noise, and the comparison would measure that noise.
fn families_pipeline() -> String {
    let sgd = r#"optim = { name = "sgd", lr = 0.05, momentum = 0.9 }
batch_size = 64
epochs = 1"#;
    let vit = r#"{ arch = "vit", patch = 7, dim = 16, depth = 2, heads = 2, embed_dim = 16 }"#;
    let stages: [(&str, &str, &str, &str); 12] = [
        (
            "simclr",
            "two",
            r#"{ plugin = "simclr", projector_hidden = 32, projector_dim = 16 }"#,
            r#"{ arch = "convnet", width = 4, embed_dim = 16 }"#,
        ),
        (
            "moco",
            "two",
            r#"{ plugin = "moco", queue_size = 64, projector_hidden = 32, projector_dim = 16 }"#,
            r#"{ arch = "mlp", hidden = [32], embed_dim = 16 }"#,
        ),
        (
            "byol",
            "two",
            r#"{ plugin = "byol", projector_hidden = 32, projector_dim = 16, predictor_hidden = 32 }"#,
            r#"{ arch = "resnet", width = 4, embed_dim = 16 }"#,
        ),
        (
            "vicreg",
            "two",
            r#"{ plugin = "vicreg", projector_hidden = 32, projector_dim = 32, projector_layers = 2 }"#,
            r#"{ arch = "mlp", hidden = [32], embed_dim = 16 }"#,
        ),
        (
            "barlow",
            "two",
            r#"{ plugin = "barlow_twins", projector_hidden = 32, projector_dim = 32, projector_layers = 2 }"#,
            r#"{ arch = "convnet", width = 4, embed_dim = 16 }"#,
        ),
        (
            "simsiam",
            "two",
            r#"{ plugin = "simsiam", projector_hidden = 32, projector_dim = 16, projector_layers = 2, predictor_hidden = 8 }"#,
            vit,
        ),
        (
            "mae",
            "one",
            r#"{ plugin = "mae", mask_ratio = 0.75 }"#,
            vit,
        ),
        (
            "ae",
            "one",
            r#"{ plugin = "autoencoder", decoder_hidden = 32 }"#,
            r#"{ arch = "convnet", width = 4, embed_dim = 16 }"#,
        ),
        (
            "dae",
            "one",
            r#"{ plugin = "denoising_autoencoder", decoder_hidden = 32 }"#,
            r#"{ arch = "mlp", hidden = [32], embed_dim = 16 }"#,
        ),
        (
            "ijepa",
            "one",
            r#"{ plugin = "ijepa", blocks = 2, predictor_depth = 1, predictor_dim = 16, momentum_start = 0.5, momentum_end = 0.5 }"#,
            r#"{ arch = "vit", patch = 4, dim = 16, depth = 2, heads = 2, embed_dim = 16 }"#,
        ),
        (
            "dino",
            "multi",
            r#"{ plugin = "dino", out_dim = 32, projector_hidden = 32, projector_dim = 16 }"#,
            vit,
        ),
        (
            "clip",
            "one",
            r#"{ plugin = "clip" }
text = { input = "captions", dim = 16, depth = 1, heads = 2 }"#,
            r#"{ arch = "convnet", width = 4, embed_dim = 16 }"#,
        ),
    ];
    // `data` (160 images: 128 to train on), `two` (two crops) and `one` (one crop).
    let mut p = tiny_mnist_pipeline("families", 5);
    p.push_str(&format!(
        r#"
[stages.multi]
kind = "augment"
input = "data"
views = [
  [{{ name = "random_resized_crop", scale = [0.5, 1.0] }}],
  [{{ name = "random_resized_crop", scale = [0.5, 1.0] }}],
  [{{ name = "random_resized_crop", scale = [0.1, 0.4], size = 14 }}],
  [{{ name = "random_resized_crop", scale = [0.1, 0.4], size = 14 }}],
]

# The captions of the same 160 images (the captioned set is MNIST's test split in IDX order).
[stages.captions]
kind = "ingest"
source = {{ format = "text", path = {captions}, column = "caption", samples = "documents" }}
tokenizer = {{ vocab_size = 300, seq_len = 12 }}
limit = 160
"#,
        captions = toml_path(&workspace().join("datasets/captions/mnist-captioned.parquet"))
    ));
    for (name, input, objective, model) in stages {
        p.push_str(&format!(
            "\n[stages.{name}]\nkind = \"pretrain\"\ninput = \"{input}\"\nobjective = {objective}\nmodel = {model}\n{sgd}\n"
        ));
    }
    p
}

#[test]
fn two_ranks_reproduce_one_process_for_every_objective_family() {
    let (one, two) = one_and_two_ranks(&families_pipeline(), &[]);
    let (a, b) = (pretrain_entries(one.path()), pretrain_entries(two.path()));
    assert_eq!(a.len(), 12);
    let mut report = Vec::new();
    // The gradient norm is the loosest: a bias right before batch norm has a true gradient of
    // zero, summed from per-rank shares that cancel, so its value is rounding noise of the
    // shares' size, and that noise differs with the order of the sums.
    for (stage, ea) in &a {
        let eb = &b[stage];
        let enc = encoder_rel_diff(ea, eb);
        let ((la, ga), (lb, gb)) = (final_loss(ea), final_loss(eb));
        report.push(format!(
            "{stage}: encoder {enc:.1e}, loss {la} vs {lb}, gradient norm {ga} vs {gb}"
        ));
        assert!(
            enc < 1e-4 && rel(la, lb) < 1e-5 && rel(ga, gb) < 1e-3,
            "{stage}: 2 ranks differ from 1 process\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn quickstart_on_two_ranks_reproduces_the_single_process_encoder() {
    let quickstart = std::fs::read_to_string(workspace().join("pipelines/quickstart.toml"))
        .unwrap()
        .replace(
            "\"../datasets/",
            &format!("\"{}/datasets/", workspace().display()),
        );
    // The quickstart's stages up to pretraining, shortened: 1024 images, one epoch of four
    // steps of 256 (128 per rank).
    let extra = [
        "--set",
        "stages.data.limit=1024",
        "--set",
        "stages.ssl.epochs=1",
        "--set",
        "stages.ssl.optim.warmup_epochs=0",
        "--stage",
        "data",
        "--stage",
        "views",
        "--stage",
        "ssl",
    ];
    let (one, two) = one_and_two_ranks(&quickstart, &extra);
    let (a, b) = (pretrain_entries(one.path()), pretrain_entries(two.path()));
    let (ea, eb) = (&a["ssl"], &b["ssl"]);
    let enc = encoder_rel_diff(ea, eb);
    let ((la, ga), (lb, gb)) = (final_loss(ea), final_loss(eb));
    eprintln!("quickstart: encoder {enc:.1e}, loss {la} vs {lb}, gradient norm {ga} vs {gb}");
    // AdamW normalises each step by the gradient's magnitude: the pre-norm biases, whose true
    // gradient is about zero, carry rounding noise of order lr; everything else agrees to 1e-6.
    assert!(enc < 2e-2, "encoder differs by {enc:.2e}");
    assert!(rel(la, lb) < 1e-4, "loss {la} vs {lb}");
    assert!(rel(ga, gb) < 5e-3, "gradient norm {ga} vs {gb}");
}

/// The pid of the `pretext` process that is rank `rank` of a run whose pipeline is `pipeline`.
fn rank_pid(pipeline: &Path, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    let path = pipeline.display().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains(&path) || cmdline.starts_with("mpirun") {
            continue;
        }
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_ends_the_run_in_bounded_time_and_commits_nothing() {
    let dir = tempdir();
    let tiny = Tiny {
        limit: 2000,
        epochs: 20,
        ..Tiny::default()
    };
    let pipeline = tiny.write(dir.path());
    let p = pipeline.display().to_string();
    let st = store(dir.path());
    let child = mpirun_command(dir.path(), 2, &["run", &p])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpirun");

    // Kill rank 1 once pretraining is under way (rank 0 has its pending entry).
    let start = Instant::now();
    let victim = loop {
        let training = !entries(&st, "augment").is_empty() && !pending(&st).is_empty();
        if let (true, Some(pid)) = (training, rank_pid(&pipeline, 1)) {
            break pid;
        }
        assert!(start.elapsed() < WAIT_LIMIT, "pretraining never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500));
    let kill = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let killed = Instant::now();
    let (code, stderr) = finish_within(child, Duration::from_secs(60), "mpirun after a kill");
    assert_ne!(code, 0, "{stderr}");
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "the other rank took {:?} to end",
        killed.elapsed()
    );
    assert!(
        stderr.contains("signal 9") || stderr.contains("Killed"),
        "mpirun names the killed rank:\n{stderr}"
    );
    assert!(
        rank_pid(&pipeline, 0).is_none(),
        "rank 0 is still running after the run ended"
    );
    assert!(entries(&st, "pretrain").is_empty(), "no pretrain entry");
    // The next (single-process) run finds the store consistent and finishes the pipeline.
    let rerun = pretext(dir.path(), &["run", &p, "--set", "stages.ssl.epochs=1"]);
    rerun.expect_code(0);
    expect_statuses(
        &rerun,
        &[
            ("data", "cached"),
            ("views", "cached"),
            ("ssl", "ran"),
            ("eval", "ran"),
        ],
    );
}

#[test]
fn an_error_on_rank_zero_alone_ends_every_rank_with_its_message() {
    let dir = tempdir();
    let (images, _) = mnist();
    let bytes = std::fs::read(&images).unwrap();
    let cut = dir.path().join("cut-images.gz");
    // The header and the first few dozen images of 400.
    std::fs::write(&cut, &bytes[..4000]).unwrap();
    let pipeline = format!(
        "{}{}",
        mnist_head("cut", 1, 400).replace(&toml_path(&images), &toml_path(&cut)),
        format!(
            "\n[stages.views]\nkind = \"augment\"\ninput = \"data\"\nviews = {TWO_CROPS}\n\n\
             [stages.ssl]\nkind = \"pretrain\"\ninput = \"views\"\nobjective = {}\n\
             model = {{ arch = \"mlp\", hidden = [32], embed_dim = 16 }}\nepochs = 1\n",
            simclr_objective("simclr")
        )
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let start = Instant::now();
    // Only rank 0 ingests, so only rank 0 meets the truncated file; rank 1 waits at the next
    // step of the plan and must not wait forever.
    let run = mpirun(dir.path(), 2, &["run", "p.toml"]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    run.expect_code(2)
        .expect_stderr_has(&["(rank 0 of 2)", "cut-images.gz"]);
    assert!(entries(&store(dir.path()), "ingest").is_empty());
    assert!(entries(&store(dir.path()), "pretrain").is_empty());
}

#[test]
fn commands_other_than_run_refuse_to_start_as_ranks() {
    let dir = tempdir();
    let p = Tiny::default().write(dir.path()).display().to_string();
    mpirun(dir.path(), 2, &["plan", &p])
        .expect_code(2)
        .expect_stderr_has(&[
            "`pretext plan` was started as one of 2 ranks",
            "single process",
        ]);
}

#[test]
fn one_rank_under_the_launcher_takes_the_data_parallel_path_to_the_same_result() {
    let (single, launched) = (tempdir(), tempdir());
    let tiny = Tiny {
        limit: 400,
        ..Tiny::default()
    };
    let stages = ["--stage", "data", "--stage", "views", "--stage", "ssl"];
    let mut runs = Vec::new();
    for (dir, ranks) in [(&single, 0), (&launched, 1)] {
        let p = tiny.write(dir.path()).display().to_string();
        let mut args = vec!["run", p.as_str()];
        args.extend(stages);
        let run = if ranks == 0 {
            pretext(dir.path(), &args)
        } else {
            mpirun(dir.path(), ranks, &args)
        };
        run.expect_code(0);
        runs.push(pretrain_entries(dir.path())["ssl"].clone());
    }
    assert_eq!(runs[0].file_name(), runs[1].file_name(), "the same key");
    let enc = encoder_rel_diff(&runs[0], &runs[1]);
    assert!(enc < 1e-5, "encoder differs by {enc:.2e}");
}
