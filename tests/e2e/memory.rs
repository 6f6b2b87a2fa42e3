//! Datasets bigger than memory (issue #16, "Bigger than memory"): over the memory budget
//! (`PRETEXT_MEMORY_BUDGET`), pretraining streams the stored dataset's row groups in a seeded
//! block shuffle, and a stage that must hold every sample stops before loading with a clear
//! exit-2 message instead of meeting the out-of-memory killer.

use std::path::Path;

use crate::support::{entries, mnist, plan_keys, pretext, pretext_with, store, tempdir, toml_path};

/// MNIST's 10,000 test images (three row groups of the stored dataset, 7.8 MiB in memory),
/// two views, one epoch of SimCLR on a small MLP, then a kNN probe.
fn pipeline(dir: &Path) -> std::path::PathBuf {
    let (images, labels) = mnist();
    let body = format!(
        r#"[pipeline]
name = "bigger"
seed = 5

[stages.data]
kind = "ingest"
source = {{ format = "idx", images = {}, labels = {} }}
split = {{ train = 0.8, test = 0.2 }}

[stages.views]
kind = "augment"
input = "data"
views = [[{{ name = "gaussian_noise", std = 0.05 }}], [{{ name = "cutout", size = 0.25, p = 0.5 }}]]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = {{ plugin = "simclr", temperature = 0.5, projector_hidden = 32, projector_dim = 16 }}
model = {{ arch = "mlp", hidden = [32], embed_dim = 16 }}
epochs = 2
batch_size = 500

[stages.eval]
kind = "probe"
encoder = "ssl"
data = "data"
methods = ["knn"]
"#,
        toml_path(&images),
        toml_path(&labels)
    );
    let p = dir.join("bigger.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// The bytes of the only pretrain entry's encoder and history.
fn trained(dir: &Path) -> (Vec<u8>, String) {
    let e = entries(&store(dir), "pretrain");
    assert_eq!(e.len(), 1, "{e:?}");
    (
        std::fs::read(e[0].join("encoder.safetensors")).unwrap(),
        std::fs::read_to_string(e[0].join("history.json")).unwrap(),
    )
}

const BUDGET: (&str, &str) = ("PRETEXT_MEMORY_BUDGET", "4M");

#[test]
fn bigger_than_memory_streams_in_bounded_memory() {
    let (a, b, whole) = (tempdir(), tempdir(), tempdir());
    pipeline(a.path());
    pipeline(b.path());
    pipeline(whole.path());
    let args = ["run", "bigger.toml"];

    // Over a 4 MiB budget: ingest, augment and pretrain run (pretrain streams); the probe,
    // which holds every sample, stops before loading, exit code 2, saying what to do.
    let streamed = pretext_with(a.path(), &args, &[BUDGET]);
    assert_eq!(streamed.code, 2, "{streamed:?}");
    for part in [
        "stage done stage=\"data\" status=\"ran\"",
        "stage done stage=\"views\" status=\"ran\"",
        "streaming its row groups in a block shuffle",
        // A window of one row group: a quarter of the budget holds no more.
        "window_row_groups=1",
        "stage done stage=\"ssl\" status=\"ran\"",
        "stage `eval`",
        "dataset.parquet",
        "the dataset holds 10000 samples (28×28 images with 1 channel), 7.6 MiB in memory, \
         over the memory budget of 4.0 MiB (PRETEXT_MEMORY_BUDGET)",
        "this stage holds every sample in memory",
        "PRETEXT_MEMORY_BUDGET=1G",
    ] {
        assert!(
            streamed.stderr.contains(part),
            "missing `{part}`: {streamed:?}"
        );
    }
    let (enc_a, hist_a) = trained(a.path());
    assert!(hist_a.contains("\"loss\""), "{hist_a}");

    // Seeded: the same budget elsewhere trains the same encoder, bit for bit.
    let again = pretext_with(b.path(), &args, &[BUDGET]);
    assert_eq!(again.code, 2, "{again:?}");
    assert_eq!(trained(b.path()), (enc_a.clone(), hist_a.clone()));

    // Under the default budget everything is in memory (a full shuffle): the probe runs, and
    // the encoder differs from the streamed one, which shows the streamed path was taken.
    let in_memory = pretext(whole.path(), &args);
    assert_eq!(in_memory.code, 0, "{in_memory:?}");
    let (enc_whole, _) = trained(whole.path());
    assert_ne!(enc_whole, enc_a);

    // A budget other than the default is part of pretrain's key (and only of pretrain's): a
    // run without it never reuses the streamed entry.
    let plan_budget = pretext_with(a.path(), &["plan", "bigger.toml"], &[BUDGET]);
    let plan_default = pretext(a.path(), &["plan", "bigger.toml"]);
    let (kb, kd) = (
        plan_keys(&plan_budget.stdout),
        plan_keys(&plan_default.stdout),
    );
    assert_eq!(kb["data"], kd["data"]);
    assert_eq!(kb["views"], kd["views"]);
    assert_ne!(kb["ssl"], kd["ssl"]);
    assert_eq!(
        kd,
        plan_keys(&pretext(whole.path(), &["plan", "bigger.toml"]).stdout)
    );

    // A budget that is not a size is bad input, named.
    let bad = pretext_with(
        a.path(),
        &["run", "bigger.toml"],
        &[("PRETEXT_MEMORY_BUDGET", "lots")],
    );
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr
            .contains("PRETEXT_MEMORY_BUDGET=`lots` is not a memory size"),
        "{bad:?}"
    );
}
