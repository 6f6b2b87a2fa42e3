//! Golden tests: every broken pipeline under `tests/golden/broken/` fails `validate` with exit
//! code 2 and exactly the message in its `.expected` file (`<file>` stands for the path given
//! on the command line).

use crate::support::{pretext, tempdir, workspace};

#[test]
fn broken_pipelines_fail_validate_with_the_expected_message() {
    let dir = workspace().join("tests/golden/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("list tests/golden/broken")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the golden files in {}",
        dir.display()
    );
    // Run from elsewhere, so relative paths in the pipelines resolve to nothing useful.
    let cwd = tempdir();
    let mut failures = Vec::new();
    for file in &files {
        let expected_path = file.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let shown = file.display().to_string();
        let want = expected.replace("<file>", &shown);
        let run = pretext(cwd.path(), &["validate", &shown]);
        if run.code != 2 || run.stderr != want {
            failures.push(format!(
                "{}: expected exit 2 and stderr\n{want}\n{}",
                file.display(),
                run.describe()
            ));
        }
        assert!(
            want.starts_with("error: "),
            "{} does not start with `error: `",
            expected_path.display()
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden files differ:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

#[test]
fn valid_golden_pipelines_parse() {
    // The valid examples reference data and plugins that do not exist here; `graph` only
    // needs the pipeline to load, so it must succeed.
    let cwd = tempdir();
    for name in ["minimal.toml", "full.toml"] {
        let file = workspace().join("tests/golden/valid").join(name);
        let run = pretext(cwd.path(), &["graph", &file.display().to_string()]);
        run.expect_code(0)
            .expect_stdout_has(&["digraph", "\"ssl\""]);
    }
}
