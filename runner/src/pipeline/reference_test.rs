//! The TOML reference (`docs/reference/*.md`) against the schema, so neither can drift.
//!
//! **Schema side.** Every key the loader accepts is found by asking the loader itself: a valid
//! pipeline with one stage of every supported kind gets an unknown key (`zzzz_unknown`)
//! inserted into one table at a time, and the error's help line lists the keys that table
//! takes (serde's "unknown field `x`, expected one of `a`, `b`" for the serde tables, the
//! hand-written list for `source`, per `format`). A key is a table of its own when putting
//! `key = { zzzz_unknown = 1 }` there gives an unknown-key error inside it; then its keys are
//! enumerated the same way. Tables whose keys are names rather than fields (`expect`,
//! `fail_if`), free-form plugin parameters (`objective`, the `views` entries) and the
//! per-format `source` keys are handled explicitly.
//!
//! **Reference side.** Each page lists keys in tables whose first column is the full key path
//! in backticks, with `<name>` for stage names and `<...>` for any name chosen by the user
//! (`stages.<name>.optim.lr`, `stages.<name>.expect.<metric>.min`). The page is the stage kind
//! (`ingest.md` documents ingest stages; `pipeline.md` the top level, `[pipeline]`, the keys
//! every stage has, and `expect`'s bounds); `source` keys belong to the format whose `###`
//! section they are in.
//!
//! Both sets must be equal, each key listed once per page, and every key's `see:` line (what
//! `pretext validate` prints) must point at a heading of a page that lists the key in that
//! section. Every stage kind has a page, or is listed as planned.
//!
//! **Defaults and examples.** On the stage kinds' pages, a default cell that starts with a
//! backticked TOML value must equal the value the loader fills in when the key is left out
//! (read from the stage's canonical config, in variants of the base pipeline where keys that
//! only apply to some `arch`, `name`, `method` or `format` exist), and every example must be
//! accepted by the loader in one of those variants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::error::{reference_link, reference_section, Seg, REFERENCE_DIR, REFERENCE_FORMATS};
use super::{parse_str, PipelineError, StageKind};

/// A key no table takes (and that no did-you-mean is close to).
const UNKNOWN: &str = "zzzz_unknown";

/// A valid pipeline with one stage of every supported kind.
const BASE: &str = r#"[pipeline]
name = "reference"

[stages.data]
kind = "ingest"
source = { format = "idx", images = "i.idx", labels = "l.idx" }

[stages.clean]
kind = "curate"
input = "data"

[stages.views]
kind = "augment"
input = "clean"
views = [["crop"]]

[stages.ssl]
kind = "pretrain"
input = "views"
objective = { plugin = "simclr" }

[stages.eval]
kind = "probe"
encoder = "ssl"
data = "clean"

[stages.tune]
kind = "finetune"
encoder = "ssl"
data = "clean"

[stages.fashion]
kind = "ingest"
source = { format = "idx", images = "f.idx", labels = "fl.idx" }

[stages.ood]
kind = "ood_eval"
encoder = "ssl"
data = "clean"

[stages.summary]
kind = "report"
"#;

/// The stage of `BASE` that has `kind`.
fn stage_of(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Ingest => "data",
        StageKind::Curate => "clean",
        StageKind::Augment => "views",
        StageKind::Pretrain => "ssl",
        StageKind::Probe => "eval",
        StageKind::Finetune => "tune",
        StageKind::OodEval => "ood",
        StageKind::Report => "summary",
        #[allow(unreachable_patterns)]
        other => panic!(
            "stage kind `{}` is supported but reference_test.rs has no stage of it: add one to \
             BASE and to stage_of(), and a page docs/reference/{}.md",
            other.as_str(),
            other.as_str()
        ),
    }
}

/// One documented (or documentable) key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    /// The reference page (file stem) that must list it.
    page: String,
    /// For `source` keys: the ingest format; else empty.
    format: String,
    /// The key path as the reference writes it, with every `<...>` placeholder made `<>`.
    path: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.md: `{}`", self.page, self.path)?;
        if !self.format.is_empty() {
            write!(f, " (format = \"{}\")", self.format)?;
        }
        Ok(())
    }
}

/// `<name>`, `<metric>`, ... all become `<>`.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_placeholder = false;
    for c in path.chars() {
        match c {
            '<' => {
                in_placeholder = true;
                out.push('<');
            }
            '>' => {
                in_placeholder = false;
                out.push('>');
            }
            _ if in_placeholder => {}
            _ => out.push(c),
        }
    }
    out
}

/// `text` with `value` set at the key path `table.key`; missing tables on the way are
/// created as inline tables.
fn with_key(text: &str, table: &[&str], key: &str, value: &str) -> String {
    fn descend<'a>(t: &'a mut dyn TableLike, path: &[&str]) -> &'a mut dyn TableLike {
        let Some((first, rest)) = path.split_first() else {
            return t;
        };
        if t.get(first).is_none() {
            t.insert(first, Item::Value(Value::InlineTable(Default::default())));
        }
        let next = t
            .get_mut(first)
            .and_then(Item::as_table_like_mut)
            .unwrap_or_else(|| panic!("`{first}` is not a table"));
        descend(next, rest)
    }
    let mut doc: DocumentMut = text.parse().expect("the base pipeline is valid TOML");
    let value: Value = value.parse().expect("a valid TOML value");
    descend(doc.as_table_mut(), table).insert(key, Item::Value(value));
    doc.to_string()
}

fn parse(text: &str) -> Result<super::Pipeline, PipelineError> {
    parse_str(text, Path::new("/reference/pipeline.toml"), &[])
}

fn join<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

/// The names between backticks in `s`.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The keys the table at `table` takes, from the error an unknown key there gives; `None`
/// when the loader does not report `UNKNOWN` as an unknown key of that table.
fn table_keys(text: &str, table: &[&str]) -> Option<Vec<String>> {
    let err = parse(&with_key(text, table, UNKNOWN, "1")).err()?;
    if !err.message.starts_with(&format!("unknown key `{UNKNOWN}`")) {
        return None;
    }
    let help = err.help.unwrap_or_default();
    assert!(
        !help.starts_with("did you mean"),
        "`{UNKNOWN}` got a did-you-mean in [{}]: {help}",
        table.join(".")
    );
    Some(backticked(&help))
}

#[track_caller]
fn expect_keys(text: &str, table: &[&str]) -> Vec<String> {
    table_keys(text, table).unwrap_or_else(|| {
        let shown = parse(&with_key(text, table, UNKNOWN, "1"));
        panic!(
            "an unknown key in [{}] is not reported as one: {shown:?}",
            table.join(".")
        )
    })
}

/// What `reference_section` needs for a key: its path with real stage names, the stage's kind
/// and its source format.
type SeeArgs = (Vec<Seg>, Option<String>, Option<String>);

/// Collects the schema's keys.
struct Schema {
    keys: BTreeSet<Key>,
    /// For each key, the path segments (with real stage names) and the stage's kind and
    /// format, to compute its `see:` line.
    see: BTreeMap<Key, SeeArgs>,
}

impl Schema {
    fn add(&mut self, page: &str, format: &str, shown: &str, segs: Vec<Seg>, kind: Option<&str>) {
        let key = Key {
            page: page.to_string(),
            format: format.to_string(),
            path: normalize(shown),
        };
        let format = (!format.is_empty()).then(|| format.to_string());
        self.see
            .insert(key.clone(), (segs, kind.map(str::to_string), format));
        self.keys.insert(key);
    }

    /// The keys of the ordinary table at `table` (real path) shown as `shown`, recursing into
    /// keys that are tables themselves.
    fn walk(&mut self, text: &str, page: &str, kind: Option<&str>, table: &[&str], shown: &str) {
        for key in expect_keys(text, table) {
            let mut path: Vec<&str> = table.to_vec();
            path.push(&key);
            let shown_key = format!("{shown}.{key}");
            let segs: Vec<Seg> = path.iter().map(|k| Seg::key(k)).collect();
            self.add(page, "", &shown_key, segs, kind);
            // A table of its own? Replace its value by a table holding an unknown key.
            let probe = with_key(text, table, &key, &format!("{{ {UNKNOWN} = 1 }}"));
            if let Err(e) = parse(&probe) {
                let inside = format!("unknown key `{UNKNOWN}` in [{}]", path.join("."));
                if e.message == inside {
                    let nested = with_key(text, table, &key, "{}");
                    self.walk(&nested, page, kind, &path, &shown_key);
                }
            }
        }
    }
}

fn schema() -> Schema {
    let mut s = Schema {
        keys: BTreeSet::new(),
        see: BTreeMap::new(),
    };
    parse(BASE).expect("the base pipeline of reference_test.rs is valid");

    // The top level: `pipeline` and `stages`.
    for top in expect_keys(BASE, &[]) {
        s.add("pipeline", "", &top, vec![Seg::key(&top)], None);
        match top.as_str() {
            "pipeline" => s.walk(BASE, "pipeline", None, &["pipeline"], "pipeline"),
            "stages" => {}
            other => panic!(
                "new top-level table `{other}`: model it in reference_test.rs and document it in \
                 docs/reference/pipeline.md"
            ),
        }
    }
    s.add(
        "pipeline",
        "",
        "stages.<name>",
        vec![Seg::key("stages"), Seg::key("data")],
        None,
    );

    let mut per_kind: Vec<BTreeSet<String>> = Vec::new();
    for kind in StageKind::SUPPORTED {
        let keys = expect_keys(BASE, &["stages", stage_of(kind)]);
        per_kind.push(keys.iter().cloned().collect());
        for key in keys {
            s.stage_key(&StageKey::new(kind, &key));
        }
    }
    // Keys every stage has are also documented with the stages on the pipeline page.
    let common = per_kind
        .iter()
        .skip(1)
        .fold(per_kind[0].clone(), |acc, k| &acc & k);
    for key in common {
        if key != "expect" {
            let segs = vec![Seg::key("stages"), Seg::key("data"), Seg::key(&key)];
            s.add(
                "pipeline",
                "",
                &format!("stages.<name>.{key}"),
                segs,
                Some("ingest"),
            );
        }
    }
    s
}

/// One key of a stage of `BASE`, as the schema methods need it.
struct StageKey<'a> {
    /// The stage's name in `BASE`.
    name: &'static str,
    /// The stage kind's page, also the kind as written.
    page: &'static str,
    /// `["stages", name]`.
    stage: [&'static str; 2],
    key: &'a str,
    /// The key as the reference shows it: `stages.<name>.<key>`.
    shown: String,
    /// The key's real path.
    segs: Vec<Seg>,
}

impl<'a> StageKey<'a> {
    fn new(kind: StageKind, key: &'a str) -> Self {
        let name = stage_of(kind);
        StageKey {
            name,
            page: kind.as_str(),
            stage: ["stages", name],
            key,
            shown: format!("stages.<name>.{key}"),
            segs: vec![Seg::key("stages"), Seg::key(name), Seg::key(key)],
        }
    }

    /// The path of a key below this one.
    fn sub(&self, extra: &[&str]) -> Vec<Seg> {
        let mut v = self.segs.clone();
        v.extend(extra.iter().map(|e| Seg::key(e)));
        v
    }
}

impl Schema {
    /// A stage's key, and the keys inside it.
    fn stage_key(&mut self, sk: &StageKey<'_>) {
        let (page, k) = (sk.page, Some(sk.page));
        self.add(page, "", &sk.shown, sk.segs.clone(), k);
        match sk.key {
            "expect" => self.expect_keys(sk),
            "fail_if" => self.fail_if_keys(sk),
            "objective" => self.objective_keys(sk),
            "views" => self.views_keys(sk),
            "curriculum" => self.curriculum_keys(sk),
            "source" => self.source_keys(sk),
            // With `init`, a finetune stage's `model` is the pretrain table: its keys are
            // documented (and checked) on the pretrain page.
            "model" if sk.page == "finetune" => {
                let nested = with_key(BASE, &sk.stage, "model", "{}");
                self.walk(
                    &nested,
                    "pretrain",
                    Some(sk.page),
                    &["stages", sk.name, "model"],
                    &sk.shown,
                );
            }
            _ => self.table_key(sk),
        }
    }

    /// Any other key: walked when it is a table of its own.
    fn table_key(&mut self, sk: &StageKey<'_>) {
        let (name, key) = (sk.name, sk.key);
        let probe = with_key(BASE, &sk.stage, key, &format!("{{ {UNKNOWN} = 1 }}"));
        let inside = format!("unknown key `{UNKNOWN}` in [stages.{name}.{key}]");
        if parse(&probe).is_err_and(|e| e.message == inside) {
            let nested = with_key(BASE, &sk.stage, key, "{}");
            self.walk(
                &nested,
                sk.page,
                Some(sk.page),
                &["stages", name, key],
                &sk.shown,
            );
        }
    }

    /// `expect`: metric name -> { bounds }, documented once on the pipeline page.
    fn expect_keys(&mut self, sk: &StageKey<'_>) {
        let (s, name, k, segs) = (self, sk.name, Some(sk.page), &sk.segs);
        let sub = |extra: &[&str]| sk.sub(extra);
        let table = ["stages", name, "expect", "some_metric"];
        let with_metric = with_key(BASE, &table[..3], "some_metric", "{ min = 0 }");
        s.add("pipeline", "", "stages.<name>.expect", segs.clone(), k);
        s.add(
            "pipeline",
            "",
            "stages.<name>.expect.<metric>",
            sub(&["some_metric"]),
            k,
        );
        for b in expect_keys(&with_metric, &table) {
            s.add(
                "pipeline",
                "",
                &format!("stages.<name>.expect.<metric>.{b}"),
                sub(&["some_metric", &b]),
                k,
            );
        }
    }

    /// `fail_if`: check name -> bound; the keys are names, not fields.
    fn fail_if_keys(&mut self, sk: &StageKey<'_>) {
        let (s, page, k, stage) = (self, sk.page, Some(sk.page), sk.stage);
        let sub = |extra: &[&str]| sk.sub(extra);
        let probe = with_key(BASE, &stage, "fail_if", &format!("{{ {UNKNOWN} = 1 }}"));
        let e = parse(&probe).expect_err("fail_if takes only known checks");
        assert!(
            e.message.contains("unknown check"),
            "fail_if is no longer a map of checks: {e}"
        );
        s.add(
            page,
            "",
            "stages.<name>.fail_if.<metric>",
            sub(&["some_check"]),
            k,
        );
    }

    /// `objective`: `plugin` plus free-form parameters, checked by the plugin.
    fn objective_keys(&mut self, sk: &StageKey<'_>) {
        let (s, page, k, stage) = (self, sk.page, Some(sk.page), sk.stage);
        let sub = |extra: &[&str]| sk.sub(extra);
        let probe = with_key(BASE, &stage, "objective", &format!("{{ {UNKNOWN} = 1 }}"));
        let e = parse(&probe).expect_err("objective needs `plugin`");
        assert!(e.message.contains("missing key `plugin`"), "{e}");
        let free = with_key(BASE, &join(&stage, &["objective"]), UNKNOWN, "1");
        parse(&free).expect("objective parameters are free-form");
        s.add(
            page,
            "",
            "stages.<name>.objective.plugin",
            sub(&["plugin"]),
            k,
        );
        s.add(
            page,
            "",
            "stages.<name>.objective.<param>",
            sub(&["some_param"]),
            k,
        );
    }

    /// `views`: each augmentation is a name, or a table with `name` and free-form parameters.
    fn views_keys(&mut self, sk: &StageKey<'_>) {
        let (s, page, k, stage, segs) = (self, sk.page, Some(sk.page), sk.stage, &sk.segs);
        let probe = with_key(BASE, &stage, "views", &format!("[[{{ {UNKNOWN} = 1 }}]]"));
        let e = parse(&probe).expect_err("an augmentation table needs `name`");
        assert!(e.message.contains("has no `name`"), "{e}");
        let free = with_key(
            BASE,
            &stage,
            "views",
            &format!("[[{{ name = \"crop\", {UNKNOWN} = 1 }}]]"),
        );
        parse(&free).expect("augmentation parameters are free-form");
        let mut at = segs.clone();
        at.extend([Seg::Index(0), Seg::Index(0)]);
        s.add(page, "", "stages.<name>.views[i][j]", at.clone(), k);
        let mut name_seg = at.clone();
        name_seg.push(Seg::key("name"));
        s.add(page, "", "stages.<name>.views[i][j].name", name_seg, k);
        let mut param = at;
        param.push(Seg::key("some_param"));
        s.add(page, "", "stages.<name>.views[i][j].<param>", param, k);
    }

    /// `curriculum`: an array of phase tables, each with the same keys.
    fn curriculum_keys(&mut self, sk: &StageKey<'_>) {
        let (s, page, k, stage, segs) = (self, sk.page, Some(sk.page), sk.stage, &sk.segs);
        let probe = with_key(
            BASE,
            &stage,
            "curriculum",
            &format!("[{{ {UNKNOWN} = 1 }}]"),
        );
        let e = parse(&probe).expect_err("a phase takes only known keys");
        let prefix = format!("unknown key `{UNKNOWN}`");
        assert!(e.message.starts_with(&prefix), "{e}");
        let mut at = segs.clone();
        at.push(Seg::Index(0));
        for key in backticked(&e.help.unwrap_or_default()) {
            let mut seg = at.clone();
            seg.push(Seg::key(&key));
            s.add(
                page,
                "",
                &format!("stages.<name>.curriculum[i].{key}"),
                seg,
                k,
            );
        }
    }

    /// `source`: the keys of each ingest format.
    fn source_keys(&mut self, sk: &StageKey<'_>) {
        let (s, page, k, stage) = (self, sk.page, Some(sk.page), sk.stage);
        let sub = |extra: &[&str]| sk.sub(extra);
        let probe = with_key(BASE, &join(&stage, &["source"]), "format", "\"zzzz\"");
        let e = parse(&probe).expect_err("an unknown format is an error");
        let help = e.help.unwrap_or_default();
        let formats: Vec<String> = backticked(&help);
        let expected: Vec<String> = REFERENCE_FORMATS.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            formats.iter().collect::<BTreeSet<_>>(),
            expected.iter().collect::<BTreeSet<_>>(),
            "the ingest formats changed ({help}): update REFERENCE_FORMATS in \
             pipeline/error.rs and docs/reference/ingest.md"
        );
        for format in &formats {
            let only = with_key(
                BASE,
                &stage,
                "source",
                &format!("{{ format = \"{format}\" }}"),
            );
            for key in expect_keys(&only, &join(&stage, &["source"])) {
                s.add(
                    page,
                    format,
                    &format!("stages.<name>.source.{key}"),
                    sub(&[&key]),
                    k,
                );
            }
        }
    }
}

/// The workspace's `docs/reference`.
fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(REFERENCE_DIR)
}

/// GitHub's (and mdBook's) anchor for a heading: lower case, punctuation other than `-` and
/// `_` dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// One key row of a reference table.
struct Row {
    key: Key,
    /// The anchor of the section the row is in.
    section: String,
    line: usize,
    /// The `default` and `example` cells (third and fourth columns).
    default: String,
    example: String,
}

/// One reference page: its key rows and its headings' anchors.
struct Page {
    rows: Vec<Row>,
    anchors: BTreeSet<String>,
}

fn read_page(page: &str, text: &str) -> Page {
    let mut rows = Vec::new();
    let mut anchors = BTreeSet::new();
    let mut section = String::new();
    let mut in_code = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(h) = trimmed.strip_prefix('#') {
            let h = h.trim_start_matches('#');
            section = anchor(h);
            anchors.insert(section.clone());
            continue;
        }
        let Some(cells) = trimmed
            .strip_prefix('|')
            .map(|r| r.split('|').map(str::trim).collect::<Vec<_>>())
        else {
            continue;
        };
        let first = cells[0];
        let Some(path) = first.strip_prefix('`').and_then(|p| p.strip_suffix('`')) else {
            continue;
        };
        if !(path == "pipeline"
            || path == "stages"
            || path.starts_with("pipeline.")
            || path.starts_with("stages."))
        {
            continue;
        }
        let format = if path.starts_with("stages.<name>.source.")
            && REFERENCE_FORMATS.contains(&section.as_str())
        {
            section.clone()
        } else {
            String::new()
        };
        let key = Key {
            page: page.to_string(),
            format,
            path: normalize(path),
        };
        rows.push(Row {
            key,
            section: section.clone(),
            line: i + 1,
            default: cells.get(2).copied().unwrap_or_default().to_string(),
            example: cells.get(3).copied().unwrap_or_default().to_string(),
        });
    }
    Page { rows, anchors }
}

fn read_reference() -> BTreeMap<String, Page> {
    let dir = reference_dir();
    let mut pages = BTreeMap::new();
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
    {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("a UTF-8 file name")
                .to_string();
            let text = std::fs::read_to_string(&path).expect("a readable page");
            pages.insert(stem.clone(), read_page(&stem, &text));
        }
    }
    pages
}

#[test]
fn reference_lists_exactly_the_schema_keys() {
    let schema = schema();
    let pages = read_reference();
    let mut problems = Vec::new();

    let mut documented = BTreeSet::new();
    for page in pages.values() {
        let mut seen = BTreeMap::new();
        for row in &page.rows {
            if let Some(first) = seen.insert(row.key.clone(), row.line) {
                problems.push(format!(
                    "{} is listed twice (lines {first} and {})",
                    row.key, row.line
                ));
            }
            documented.insert(row.key.clone());
        }
    }
    for key in schema.keys.difference(&documented) {
        problems.push(format!(
            "{key} is in the schema but not in the reference: add a row to {REFERENCE_DIR}/{}.md",
            key.page
        ));
    }
    for key in documented.difference(&schema.keys) {
        problems.push(format!(
            "{key} is in the reference but the schema has no such key: remove or fix the row"
        ));
    }

    // Every key's `see:` line points at a page listing it and at a heading of that page.
    for (key, (segs, kind, format)) in &schema.see {
        let target = reference_section(segs, kind.as_deref(), format.as_deref());
        let link = reference_link(&target);
        let (page, anchor) = &target;
        let Some(p) = pages.get(page) else {
            problems.push(format!(
                "{key}: `see: {link}` names a page that does not exist"
            ));
            continue;
        };
        if !p.anchors.contains(anchor) {
            problems.push(format!(
                "{key}: `see: {link}`: the page has no heading `{anchor}`"
            ));
        }
        let wanted = Key {
            page: page.clone(),
            ..key.clone()
        };
        // The row must sit in the section the line points at; a table's own row may sit in
        // its parent's section (the link then goes to the table's section).
        let own_section = key.path.rsplit('.').next() == Some(anchor.as_str());
        let rows: Vec<&Row> = p.rows.iter().filter(|r| r.key == wanted).collect();
        if rows.is_empty() {
            problems.push(format!(
                "{key}: `see: {link}`, but that page does not list the key"
            ));
        } else if !own_section && !rows.iter().any(|r| r.section == *anchor) {
            problems.push(format!(
                "{key}: `see: {link}`, but the key is listed under `#{}`",
                rows[0].section
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "the TOML reference ({REFERENCE_DIR}/) and the schema differ ({} problem(s)):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn every_stage_kind_has_a_page_or_is_listed_as_planned() {
    let pages = read_reference();
    let pipeline = std::fs::read_to_string(reference_dir().join("pipeline.md"))
        .expect("docs/reference/pipeline.md");
    for kind in StageKind::ALL {
        if kind.is_supported() {
            assert!(
                pages.contains_key(kind.as_str()),
                "stage kind `{}` has no page {REFERENCE_DIR}/{}.md",
                kind.as_str(),
                kind.as_str()
            );
        } else {
            assert!(
                pipeline.contains(&format!("| `{}` | planned", kind.as_str())),
                "{REFERENCE_DIR}/pipeline.md does not list `{}` as planned",
                kind.as_str()
            );
        }
    }
}

/// The first backticked literal of a table cell (`0.8`, `"adamw"`, `[512, 512]`), parsed as a
/// TOML value; `None` for cells that do not start with one (`required`, `none`, prose).
fn literal(cell: &str) -> Option<toml::Value> {
    let inner = cell.strip_prefix('`')?.split('`').next()?;
    let table: toml::Table = toml::from_str(&format!("v = {inner}")).ok()?;
    table.get("v").cloned()
}

/// Whether a TOML literal equals a value of the canonical config (numbers compare as floats).
fn same(doc: &toml::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (doc, actual) {
        (toml::Value::Integer(i), J::Number(n)) => n.as_f64() == Some(*i as f64),
        (toml::Value::Float(f), J::Number(n)) => n.as_f64() == Some(*f),
        (toml::Value::String(s), J::String(a)) => s == a,
        (toml::Value::Boolean(b), J::Bool(a)) => b == a,
        (toml::Value::Array(d), J::Array(a)) => {
            d.len() == a.len() && d.iter().zip(a).all(|(x, y)| same(x, y))
        }
        // `fail_if = {}` is kept as a list of bounds.
        (toml::Value::Table(d), J::Array(a)) => d.is_empty() && a.is_empty(),
        (toml::Value::Table(d), J::Object(a)) => {
            d.len() == a.len() && d.iter().all(|(k, v)| a.get(k).is_some_and(|y| same(v, y)))
        }
        _ => false,
    }
}

/// Variants of `BASE` in which keys that only apply to some settings exist: every `arch`,
/// optimiser, finetune method and ingest format, and tables that are off by default.
fn contexts(kind: StageKind) -> Vec<String> {
    let name = stage_of(kind);
    let stage = ["stages", name];
    let set = |key: &str, value: &str| with_key(BASE, &stage, key, value);
    let mut out = vec![BASE.to_string()];
    match kind {
        StageKind::Ingest => {
            // Feature-vector sources cannot feed the image stages of BASE: the ingest stage
            // alone.
            let alone = "[pipeline]\nname = \"reference\"\n\n[stages.data]\nkind = \"ingest\"\n";
            for source in [
                r#"{ format = "image_folder", path = "p" }"#,
                r#"{ format = "parquet", path = "p.parquet", image = "img" }"#,
                r#"{ format = "parquet", path = "p.parquet", features = "f" }"#,
                r#"{ format = "csv", path = "p.csv" }"#,
            ] {
                out.push(with_key(alone, &stage, "source", source));
            }
            // Text sources need a tokenizer.
            for source in [
                r#"{ format = "text", path = "books" }"#,
                r#"{ format = "text", path = "books", labels = "files" }"#,
                r#"{ format = "text", path = "t.parquet", column = "text" }"#,
            ] {
                let text = with_key(alone, &stage, "source", source);
                out.push(with_key(&text, &stage, "tokenizer", "{}"));
            }
        }
        StageKind::Pretrain => {
            for arch in ["convnet", "resnet", "vit", "transformer"] {
                out.push(set("model", &format!("{{ arch = \"{arch}\" }}")));
            }
            for optim in ["sgd", "lars"] {
                out.push(set("optim", &format!("{{ name = \"{optim}\" }}")));
            }
            // `init`: a file, and an earlier pretrain stage.
            out.push(set("init", r#"{ path = "w.safetensors" }"#));
            let two = format!(
                "{BASE}\n[stages.mnist_ssl]\nkind = \"pretrain\"\ninput = \"views\"\nobjective = {{ plugin = \"simclr\" }}\n"
            );
            out.push(with_key(
                &two,
                &stage,
                "init",
                r#"{ encoder = "mnist_ssl" }"#,
            ));
            // `text`: image–text pairs need a stage of captions.
            let captions = format!(
                "{BASE}\n[stages.captions]\nkind = \"ingest\"\nsource = {{ format = \"text\", path = \"c.parquet\", column = \"caption\", samples = \"documents\" }}\ntokenizer = {{}}\n"
            );
            out.push(with_key(
                &captions,
                &stage,
                "text",
                r#"{ input = "captions" }"#,
            ));
        }
        StageKind::Probe => out.push(set("supervised", "{}")),
        StageKind::Finetune => {
            for method in ["partial", "lora", "adapter"] {
                out.push(set("method", &format!("\"{method}\"")));
            }
            out.push(with_key(&out[2], &stage, "lora", "{}"));
            out.push(with_key(&out[3], &stage, "adapter", "{}"));
            // From a file instead of the `encoder` stage.
            let from_file = BASE.replace(
                "[stages.tune]\nkind = \"finetune\"\nencoder = \"ssl\"\n",
                "[stages.tune]\nkind = \"finetune\"\ninit = { path = \"w.safetensors\" }\nmodel = { arch = \"mlp\" }\n",
            );
            assert_ne!(from_file, BASE, "BASE's finetune stage has changed");
            out.push(from_file);
        }
        _ => {}
    }
    out
}

/// The value at `path` (keys below the stage) in a stage's canonical config. A tagged enum
/// kept under its own key (`method = { method = "full", .. }`) counts as its tag.
fn canonical_at<'v>(config: &'v serde_json::Value, path: &[&str]) -> Option<&'v serde_json::Value> {
    let v = path.iter().try_fold(config, |v, k| v.get(k))?;
    match (v, path.last()) {
        (serde_json::Value::Object(o), Some(last)) if o.contains_key(*last) => o.get(*last),
        _ => Some(v),
    }
}

#[test]
fn reference_defaults_and_examples_match_the_schema() {
    let pages = read_reference();
    let mut problems = Vec::new();
    let mut checked = (0, 0);
    for kind in StageKind::SUPPORTED {
        let Some(page) = pages.get(kind.as_str()) else {
            continue;
        };
        let name = stage_of(kind);
        let contexts = contexts(kind);
        let configs: Vec<serde_json::Value> = contexts
            .iter()
            .map(|text| {
                let p = parse(text).unwrap_or_else(|e| panic!("a context of {kind:?}: {e}"));
                p.stage(name).expect("the stage exists").canonical_config()["config"].clone()
            })
            .collect();
        for row in &page.rows {
            let Some(rest) = row.key.path.strip_prefix("stages.<>.") else {
                continue;
            };
            if rest.contains('<') || rest.contains('[') || rest == "kind" || rest == "expect" {
                continue;
            }
            let keys: Vec<&str> = rest.split('.').collect();
            // The default: the canonical config of a stage that does not set the key.
            if let Some(doc) = literal(&row.default) {
                let found: Vec<&serde_json::Value> = configs
                    .iter()
                    .filter_map(|c| canonical_at(c, &keys))
                    .filter(|v| !v.is_null())
                    .collect();
                if !found.is_empty() {
                    checked.0 += 1;
                    if !found.iter().any(|v| same(&doc, v)) {
                        problems.push(format!(
                            "{}.md:{}: `{}` documents default {} but the schema's is {}",
                            kind.as_str(),
                            row.line,
                            row.key.path,
                            row.default,
                            found[0]
                        ));
                    }
                }
            }
            // The example: accepted by the loader in one of the contexts.
            if let Some(example) = row
                .example
                .strip_prefix('`')
                .and_then(|e| e.split('`').next())
            {
                checked.1 += 1;
                let stage_keys: Vec<&str> = ["stages", name]
                    .into_iter()
                    .chain(keys[..keys.len() - 1].iter().copied())
                    .collect();
                let last = keys[keys.len() - 1];
                let errors: Vec<String> = contexts
                    .iter()
                    .map(|text| parse(&with_key(text, &stage_keys, last, example)))
                    .filter_map(Result::err)
                    .map(|e| e.to_string())
                    .collect();
                if errors.len() == contexts.len() {
                    problems.push(format!(
                        "{}.md:{}: the example of `{}`, `{example}`, is rejected: {}",
                        kind.as_str(),
                        row.line,
                        row.key.path,
                        errors[0]
                    ));
                }
            }
        }
    }
    assert!(
        checked.0 > 50 && checked.1 > 80,
        "too few defaults ({}) or examples ({}) checked: has the table layout changed?",
        checked.0,
        checked.1
    );
    assert!(
        problems.is_empty(),
        "defaults or examples in {REFERENCE_DIR}/ are wrong ({}):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
