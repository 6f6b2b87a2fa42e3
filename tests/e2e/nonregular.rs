//! A source path that is not a regular file — a device that never ends (`/dev/zero`,
//! `/dev/urandom`) or a named pipe that blocks until someone writes — is refused at once by
//! `plan`, `validate` and `run`, with exit code 2 and a message naming the stage, the key and
//! what the path is. (Each used to hang forever: the digest for the stage key read on.)

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{command, finish_within, mnist, tempdir, toml_path};

/// Runs `pretext <args>`; fails the test if it has not finished within `limit`.
fn run_within(dir: &Path, args: &[&str], limit: Duration) -> (i32, String) {
    let child = command(dir, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pretext");
    finish_within(child, limit, &format!("pretext {}", args.join(" ")))
}

#[test]
fn a_source_path_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = tempdir();
    let (images, labels) = mnist();
    let (images, labels) = (toml_path(&images), toml_path(&labels));
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{{ format = \"idx\", images = \"/dev/zero\", labels = {labels} }}"),
            "images `/dev/zero`",
            "a character device",
        ),
        (
            format!("{{ format = \"idx\", images = {images}, labels = \"/dev/zero\" }}"),
            "labels `/dev/zero`",
            "a character device",
        ),
        (
            "{ format = \"csv\", path = \"/dev/zero\", features = [\"a\"] }".into(),
            "path `/dev/zero`",
            "a character device",
        ),
        (
            "{ format = \"parquet\", path = \"/dev/urandom\", image = \"img\" }".into(),
            "path `/dev/urandom`",
            "a character device",
        ),
        (
            "{ format = \"text\", path = \"/dev/zero\" }\ntokenizer = { vocab_size = 300, seq_len = 24 }"
                .into(),
            "path `/dev/zero`",
            "a character device",
        ),
    ];
    if made.is_ok_and(|s| s.success()) {
        cases.push((
            format!(
                "{{ format = \"idx\", images = {}, labels = {labels} }}",
                toml_path(&fifo)
            ),
            "images `",
            "a named pipe",
        ));
    }
    for (source, key, what) in &cases {
        let p = dir.path().join("pipeline.toml");
        std::fs::write(
            &p,
            format!(
                "[pipeline]\nname = \"nonregular\"\n\n[stages.data]\nkind = \"ingest\"\n\
                 source = {source}\n"
            ),
        )
        .unwrap();
        let p = p.display().to_string();
        for cmd in ["plan", "validate", "run"] {
            let (code, err) = run_within(dir.path(), &[cmd, &p], Duration::from_secs(20));
            assert_eq!(code, 2, "`{cmd}` with {source}: exit {code}\n{err}");
            for needle in ["stage `data`", key, what, "not a regular file"] {
                assert!(
                    err.contains(needle),
                    "`{cmd}` with {source}: stderr lacks {needle:?}\n{err}"
                );
            }
        }
    }
    // Nothing was stored.
    assert!(!dir
        .path()
        .join(".pretext")
        .join("objects")
        .join("ingest")
        .exists());
}
