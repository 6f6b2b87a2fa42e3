//! The weights a pretrain or finetune stage's encoder starts from (`init`): another stage's
//! encoder artifact, or a safetensors file with pretext's names or a PyTorch state dict's
//! (the mapping is `engine::nn::torch_names`). Whatever does not fit the encoder being built
//! is collected, and the error names the first differences and what to do.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::encoder::{EncoderMeta, ENCODER_FILE, ENCODER_META};
use super::read_json;
use crate::engine::io::{self, FileTensor};
use crate::engine::nn::torch_names::{self, Layout};
use crate::engine::nn::{EncoderSpec, InputShape, ParamStore};
use crate::engine::Engine;
use crate::error::StageError;
use crate::pipeline::InitNames;

/// Where the starting weights are.
#[derive(Debug, Clone, Copy)]
pub enum InitSource<'a> {
    /// The encoder artifact of stage `stage`, in `dir`.
    Stage { stage: &'a str, dir: &'a Path },
    /// A safetensors file; `written` is the path as the pipeline file says it.
    File {
        path: &'a Path,
        written: &'a str,
        names: InitNames,
    },
}

impl fmt::Display for InitSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitSource::Stage { stage, .. } => write!(f, "the encoder of stage `{stage}`"),
            InitSource::File {
                written,
                names: InitNames::Pretext,
                ..
            } => write!(f, "file `{written}`"),
            InitSource::File {
                written,
                names: InitNames::Torch,
                ..
            } => write!(f, "file `{written}` (PyTorch names)"),
        }
    }
}

/// How many differences an error lists.
const SHOWN: usize = 6;

/// One way the weights do not fit the encoder.
#[derive(Debug, Clone, PartialEq)]
enum Difference {
    /// The architecture or input size the weights were saved for differs.
    Architecture(String),
    Missing {
        name: String,
        expected: Vec<usize>,
    },
    Unexpected {
        name: String,
        found: Vec<usize>,
    },
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    Dtype {
        name: String,
        found: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Architecture(what) => write!(f, "{what}"),
            Difference::Missing { name, expected } => {
                write!(f, "missing `{name}` (expected shape {expected:?})")
            }
            Difference::Unexpected { name, found } => {
                write!(
                    f,
                    "unexpected `{name}` (shape {found:?}): not part of this encoder"
                )
            }
            Difference::Shape {
                name,
                expected,
                found,
            } => write!(f, "`{name}`: expected shape {expected:?}, found {found:?}"),
            Difference::Dtype { name, found } => {
                write!(f, "`{name}`: dtype {found}, expected F32")
            }
        }
    }
}

/// What a file tensor must be for the encoder: its shape and the entries it fills.
struct Wanted {
    shape: Vec<usize>,
    /// `(entry index, layout)`; `None`: the file holds the entry as it is, `[rows, cols]`.
    fills: Vec<(usize, Option<Layout>)>,
}

/// Replace the values of the encoder's entries (`ps.entries[..enc_len]`, an encoder built
/// from `spec` for `input`) with the weights `src` holds. Returns how many file tensors were
/// read. Weights that do not fit are bad input (exit code 2), named in the error.
pub fn apply(
    e: &Engine,
    ps: &mut ParamStore,
    enc_len: usize,
    spec: &EncoderSpec,
    input: InputShape,
    src: InitSource,
) -> Result<usize, StageError> {
    let (file, names) = match src {
        InitSource::Stage { dir, .. } => (dir.join(ENCODER_FILE), InitNames::Pretext),
        InitSource::File { path, names, .. } => (path.to_path_buf(), names),
    };
    if names == InitNames::Torch && matches!(spec, EncoderSpec::Text { .. }) {
        return Err(StageError::Input(format!(
            "`init` {src}: PyTorch names are defined for the mlp, convnet, resnet and vit encoders, not the text transformer; save the weights with pretext's names (`names = \"pretext\"`)"
        )));
    }
    let (tensors, metadata) =
        io::read_all(&file).map_err(|err| StageError::Input(format!("`init` {src}: {err}")))?;
    let saved_for = match src {
        InitSource::Stage { dir, .. } => Some(read_json::<EncoderMeta>(&dir.join(ENCODER_META))?),
        // A file pretext wrote carries its encoder's description in the header.
        InitSource::File { .. } => metadata
            .get("encoder")
            .and_then(|m| serde_json::from_str::<EncoderMeta>(m).ok()),
    };
    let mut diffs = match &saved_for {
        Some(meta) => architecture_differences(meta, spec, input),
        None => Vec::new(),
    };
    let wanted = wanted(ps, enc_len, spec, input, names)?;
    let mut found = tensor_differences(&wanted, &tensors, names);
    // Shapes and dtypes say the most about what differs; then what is missing or extra.
    found.sort_by_key(|d| match d {
        Difference::Shape { .. } | Difference::Dtype { .. } => 0,
        _ => 1,
    });
    diffs.extend(found);
    if !diffs.is_empty() {
        return Err(StageError::Input(mismatch_message(
            src, spec, &diffs, &tensors, names,
        )));
    }
    let by_name: BTreeMap<&str, &FileTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    for (name, w) in &wanted {
        let values = by_name[name.as_str()]
            .values
            .as_deref()
            .expect("F32 checked above");
        for &(i, layout) in &w.fills {
            let (rows, cols) = ps.entries[i].value.shape();
            let v = match layout {
                None => values.to_vec(),
                Some(l) => l.to_pretext(values, rows, cols),
            };
            ps.entries[i].value = e.tensor(v, rows, cols)?;
        }
    }
    Ok(wanted.len())
}

/// The file tensors the encoder needs, by file name.
fn wanted(
    ps: &ParamStore,
    enc_len: usize,
    spec: &EncoderSpec,
    input: InputShape,
    names: InitNames,
) -> Result<BTreeMap<String, Wanted>, StageError> {
    let mut out: BTreeMap<String, Wanted> = BTreeMap::new();
    for (i, en) in ps.entries[..enc_len].iter().enumerate() {
        let (rows, cols) = en.value.shape();
        let (name, shape, layout) = match names {
            InitNames::Pretext => (en.name.clone(), vec![rows, cols], None),
            InitNames::Torch => {
                let t = torch_names::torch_name(spec, input, &en.name).ok_or_else(|| {
                    StageError::Failed(format!(
                        "internal: encoder entry `{}` has no PyTorch name",
                        en.name
                    ))
                })?;
                (t.torch, t.layout.torch_shape(rows, cols), Some(t.layout))
            }
        };
        out.entry(name)
            .or_insert_with(|| Wanted {
                shape,
                fills: Vec::new(),
            })
            .fills
            .push((i, layout));
    }
    Ok(out)
}

/// Missing, misshapen, non-F32 and unexpected tensors, in name order.
fn tensor_differences(
    wanted: &BTreeMap<String, Wanted>,
    tensors: &[FileTensor],
    names: InitNames,
) -> Vec<Difference> {
    let by_name: BTreeMap<&str, &FileTensor> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut diffs = Vec::new();
    for (name, w) in wanted {
        match by_name.get(name.as_str()) {
            None => diffs.push(Difference::Missing {
                name: name.clone(),
                expected: w.shape.clone(),
            }),
            Some(t) if t.shape != w.shape => diffs.push(Difference::Shape {
                name: name.clone(),
                expected: w.shape.clone(),
                found: t.shape.clone(),
            }),
            Some(t) if t.values.is_none() => diffs.push(Difference::Dtype {
                name: name.clone(),
                found: t.dtype.clone(),
            }),
            Some(_) => {}
        }
    }
    for t in tensors {
        let ignored = names == InitNames::Torch && torch_names::ignored(&t.name);
        if !wanted.contains_key(&t.name) && !ignored {
            diffs.push(Difference::Unexpected {
                name: t.name.clone(),
                found: t.shape.clone(),
            });
        }
    }
    diffs
}

/// How the architecture or input size `meta` was saved for differs from `spec` on `input`.
fn architecture_differences(
    meta: &EncoderMeta,
    spec: &EncoderSpec,
    input: InputShape,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let (found_arch, found) = spec_fields(&meta.spec);
    let (want_arch, want) = spec_fields(spec);
    if found_arch != want_arch {
        out.push(Difference::Architecture(format!(
            "architecture: `{found_arch}` in the checkpoint, `{want_arch}` here"
        )));
    } else {
        for (key, v) in &want {
            match found.get(key) {
                Some(f) if f != v => out.push(Difference::Architecture(format!(
                    "model `{key}`: {f} in the checkpoint, {v} here"
                ))),
                _ => {}
            }
        }
    }
    let shape = |s: InputShape| format!("{}x{}x{}", s.channels, s.height, s.width);
    if meta.input != input {
        out.push(Difference::Architecture(format!(
            "input: {} (channels x height x width) in the checkpoint, {} here",
            shape(meta.input),
            shape(input)
        )));
    }
    if let Some((width, _)) = &meta.adapters {
        out.push(Difference::Architecture(format!(
            "the checkpoint's encoder carries bottleneck adapters (width {width}) from fine-tuning, which this encoder does not have"
        )));
    }
    out
}

/// The architecture's `arch` keyword and its settings, named as in the `model` table.
fn spec_fields(spec: &EncoderSpec) -> (&'static str, BTreeMap<String, String>) {
    let arch = match spec {
        EncoderSpec::Mlp { .. } => "mlp",
        EncoderSpec::ConvNet { .. } => "convnet",
        EncoderSpec::ResNet { .. } => "resnet",
        EncoderSpec::Vit { .. } => "vit",
        EncoderSpec::Text { .. } => "transformer",
    };
    let pool = |on: bool, yes: &str| format!("\"{}\"", if on { yes } else { "mean" });
    let mut fields = BTreeMap::new();
    let json = serde_json::to_value(spec).unwrap_or_default();
    if let Some(obj) = json
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_object())
    {
        for (k, v) in obj {
            let (key, value) = match (k.as_str(), v.as_bool()) {
                ("cls_token" | "cls_pool", Some(b)) => ("pool".to_string(), pool(b, "cls")),
                ("flatten", Some(b)) => ("pool".to_string(), pool(b, "flatten")),
                // The vocabulary and length come from the dataset, not the model table.
                ("vocab", _) => ("vocabulary size".to_string(), v.to_string()),
                ("seq_len", _) => ("sequence length".to_string(), v.to_string()),
                _ => (k.clone(), v.to_string()),
            };
            fields.insert(key, value);
        }
    }
    (arch, fields)
}

/// The error for weights that do not fit: what was read, the first differences, what to do.
fn mismatch_message(
    src: InitSource,
    spec: &EncoderSpec,
    diffs: &[Difference],
    tensors: &[FileTensor],
    names: InitNames,
) -> String {
    let (arch, _) = spec_fields(spec);
    let mut text = format!(
        "`init` {src} does not fit this stage's {arch} encoder: {} difference{}",
        diffs.len(),
        if diffs.len() == 1 { "" } else { "s" }
    );
    if diffs.len() > SHOWN {
        text.push_str(&format!(", the first {SHOWN}"));
    }
    text.push(':');
    for d in diffs.iter().take(SHOWN) {
        text.push_str(&format!("\n  - {d}"));
    }
    let pretext_named = tensors.iter().any(|t| t.name.starts_with("encoder."));
    let advice = if diffs.iter().any(|d| matches!(d, Difference::Dtype { .. })) {
        "save every tensor as float32 (PyTorch: `{k: v.float() for k, v in state_dict.items()}`)"
            .to_string()
    } else {
        match (src, names) {
            (InitSource::Stage { stage, .. }, _) => format!(
                "give this stage the same `model` as stage `{stage}` and data of the same image size, or train from scratch without `init`"
            ),
            (_, InitNames::Torch) if pretext_named => {
                "the file has pretext's names (`encoder.…`): set `names = \"pretext\"`".into()
            }
            (_, InitNames::Pretext) if !pretext_named && !tensors.is_empty() => {
                "the file does not have pretext's names (`encoder.…`); for a PyTorch state dict set `names = \"torch\"`".into()
            }
            (_, InitNames::Torch) => {
                "set `model` to the architecture the state dict was saved from; the PyTorch module layout pretext reads is in docs/reference/pretrain.md#init (drop entries such as a classifier or projector before saving)".into()
            }
            (_, InitNames::Pretext) => {
                "set `model` to the architecture the file was saved from (an `encoder.json` beside an `encoder.safetensors` says it)".into()
            }
        }
    };
    text.push_str(&format!("\n{advice}"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::nn::{Encoder, Init};

    fn input() -> InputShape {
        InputShape {
            channels: 1,
            height: 8,
            width: 8,
        }
    }

    fn resnet() -> EncoderSpec {
        EncoderSpec::ResNet {
            width: 4,
            blocks: 1,
            embed_dim: 6,
            batch_norm: true,
        }
    }

    fn build(e: &Engine, spec: &EncoderSpec, seed: u64) -> ParamStore {
        let mut ps = ParamStore::default();
        Encoder::new(e, &mut ps, &mut Init::new(seed), spec, input()).unwrap();
        ps
    }

    /// Writes the tensors of `ps` under their PyTorch names (the inverse layouts), plus
    /// `extra` tensors, as a PyTorch exporter would.
    fn write_torch(ps: &ParamStore, spec: &EncoderSpec, path: &Path, extra: &[(&str, Vec<usize>)]) {
        let mut fused: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        for en in &ps.entries {
            let (r, c) = en.value.shape();
            let t = torch_names::torch_name(spec, input(), &en.name).unwrap();
            let shape = t.layout.torch_shape(r, c);
            let slot = fused
                .entry(t.torch)
                .or_insert_with(|| (shape.clone(), vec![0.0; shape.iter().product()]));
            t.layout.to_torch(&en.value.to_vec(), r, c, &mut slot.1);
        }
        for (name, shape) in extra {
            fused.insert(
                name.to_string(),
                (shape.clone(), vec![0.5; shape.iter().product()]),
            );
        }
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = fused
            .into_iter()
            .map(|(n, (s, v))| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::tensor::Dtype::F32,
                    s.clone(),
                    b,
                )
                .unwrap();
                (n.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, &None, path).unwrap();
    }

    #[test]
    fn torch_named_weights_round_trip_into_the_encoder() {
        let e = Engine::cpu();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        for spec in [
            resnet(),
            EncoderSpec::Vit {
                patch: 4,
                dim: 8,
                depth: 1,
                heads: 2,
                cls_token: true,
                embed_dim: 4,
            },
            EncoderSpec::ConvNet {
                width: 2,
                embed_dim: 4,
                batch_norm: true,
                flatten: true,
            },
        ] {
            let source = build(&e, &spec, 1);
            write_torch(
                &source,
                &spec,
                &path,
                &[("bn1.num_batches_tracked", vec![])],
            );
            let mut ps = build(&e, &spec, 2);
            let n = ps.entries.len();
            let src = InitSource::File {
                path: &path,
                written: "w.safetensors",
                names: InitNames::Torch,
            };
            apply(&e, &mut ps, n, &spec, input(), src).unwrap();
            for (a, b) in source.entries.iter().zip(&ps.entries) {
                assert_eq!(a.value.to_vec(), b.value.to_vec(), "{spec:?} {}", a.name);
            }
        }
    }

    /// The PyTorch fixtures (tests/reference/export_torch_init.py): each state dict, read
    /// into the pretext encoder of the same architecture, embeds the fixture's inputs as the
    /// PyTorch module did (eval mode: batch-norm running statistics, CLS or mean pooling).
    #[test]
    fn pytorch_state_dicts_embed_as_pytorch_does() {
        let e = Engine::cpu();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/init");
        let mnist = InputShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        let vit = |depth, heads, cls_token, embed_dim| EncoderSpec::Vit {
            patch: 7,
            dim: 16,
            depth,
            heads,
            cls_token,
            embed_dim,
        };
        let fixtures = [
            (
                "resnet",
                EncoderSpec::ResNet {
                    width: 4,
                    blocks: 1,
                    embed_dim: 16,
                    batch_norm: true,
                },
            ),
            ("vit", vit(2, 2, true, 16)),
            ("vit_mean", vit(1, 4, false, 8)),
            (
                "convnet",
                EncoderSpec::ConvNet {
                    width: 4,
                    embed_dim: 16,
                    batch_norm: true,
                    flatten: true,
                },
            ),
            (
                "mlp",
                EncoderSpec::Mlp {
                    hidden: vec![16],
                    embed_dim: 16,
                    batch_norm: true,
                },
            ),
        ];
        for (name, spec) in fixtures {
            let mut ps = ParamStore::default();
            let enc = Encoder::new(&e, &mut ps, &mut Init::new(3), &spec, mnist).unwrap();
            let n = ps.entries.len();
            let path = dir.join(format!("{name}.safetensors"));
            let src = InitSource::File {
                path: &path,
                written: name,
                names: InitNames::Torch,
            };
            apply(&e, &mut ps, n, &spec, mnist, src).unwrap();
            let (expected, _) =
                io::read_all(&dir.join(format!("{name}.expected.safetensors"))).unwrap();
            let get = |n: &str| expected.iter().find(|t| t.name == n).unwrap().clone();
            let (x, want) = (get("input"), get("embedding"));
            let x = e.tensor(x.values.unwrap(), x.shape[0], x.shape[1]).unwrap();
            let mut g = e.graph(false);
            let got = enc.forward(&mut ps, &mut g, &x, mnist, false).unwrap();
            assert_eq!(got.shape(), (want.shape[0], want.shape[1]), "{name}");
            let want = want.values.unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in got.to_vec().iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * scale.max(1.0),
                    "{name}: embedding value {i}: pretext {a}, PyTorch {b}"
                );
            }
        }
    }

    #[test]
    fn mismatches_are_listed_with_names_and_shapes() {
        let e = Engine::cpu();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let spec = resnet();
        let source = build(&e, &spec, 1);
        write_torch(&source, &spec, &path, &[("classifier.weight", vec![10, 6])]);
        // A wider head than the file's: one shape difference, one unexpected tensor.
        let wider = EncoderSpec::ResNet {
            width: 4,
            blocks: 1,
            embed_dim: 7,
            batch_norm: true,
        };
        let mut ps = build(&e, &wider, 2);
        let n = ps.entries.len();
        let src = InitSource::File {
            path: &path,
            written: "w.safetensors",
            names: InitNames::Torch,
        };
        let err = apply(&e, &mut ps, n, &wider, input(), src).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.exit_code(), 2);
        assert!(msg.contains("file `w.safetensors` (PyTorch names) does not fit this stage's resnet encoder: 3 differences"), "{msg}");
        assert!(
            msg.contains("`fc.weight`: expected shape [7, 16], found [6, 16]"),
            "{msg}"
        );
        assert!(
            msg.contains("`fc.bias`: expected shape [7], found [6]"),
            "{msg}"
        );
        assert!(
            msg.contains("unexpected `classifier.weight` (shape [10, 6])"),
            "{msg}"
        );
        // Without batch norm the file's bn tensors are unexpected; the first few are listed.
        let plain = EncoderSpec::ResNet {
            width: 4,
            blocks: 1,
            embed_dim: 6,
            batch_norm: false,
        };
        let mut ps = build(&e, &plain, 2);
        let n = ps.entries.len();
        let msg = apply(&e, &mut ps, n, &plain, input(), src)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!(", the first {SHOWN}:")), "{msg}");
        assert!(msg.contains("unexpected `bn1.bias` (shape [4])"), "{msg}");
        // The same file read with pretext's names: every tensor missing, and advice.
        let mut ps = build(&e, &spec, 2);
        let n = ps.entries.len();
        let pretext = InitSource::File {
            path: &path,
            written: "w.safetensors",
            names: InitNames::Pretext,
        };
        let msg = apply(&e, &mut ps, n, &spec, input(), pretext)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("missing `encoder.head.bias` (expected shape [1, 6])"),
            "{msg}"
        );
        assert!(msg.contains("set `names = \"torch\"`"), "{msg}");
        // The encoder is untouched by a failed import.
        assert_eq!(
            ps.entries[0].value.to_vec(),
            build(&e, &spec, 2).entries[0].value.to_vec()
        );
    }

    #[test]
    fn a_pretext_file_names_the_architecture_it_was_saved_for() {
        let e = Engine::cpu();
        let dir = tempfile::tempdir().unwrap();
        let spec = resnet();
        let source = build(&e, &spec, 1);
        let meta = EncoderMeta {
            spec: spec.clone(),
            input: input(),
            embed_dim: 6,
            objective: "simclr".into(),
            dataset_key: "k".into(),
            adapters: None,
        };
        super::super::encoder::save_encoder(dir.path(), &source, &meta).unwrap();
        // Same architecture: read as it is.
        let mut ps = build(&e, &spec, 2);
        let n = ps.entries.len();
        let stage = InitSource::Stage {
            stage: "ssl",
            dir: dir.path(),
        };
        apply(&e, &mut ps, n, &spec, input(), stage).unwrap();
        assert_eq!(
            ps.entries[3].value.to_vec(),
            source.entries[3].value.to_vec()
        );
        // Two more blocks per stage: the architecture difference comes first.
        let deeper = EncoderSpec::ResNet {
            width: 4,
            blocks: 2,
            embed_dim: 6,
            batch_norm: true,
        };
        let mut ps = build(&e, &deeper, 2);
        let n = ps.entries.len();
        let msg = apply(&e, &mut ps, n, &deeper, input(), stage)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("the encoder of stage `ssl` does not fit this stage's resnet encoder"),
            "{msg}"
        );
        assert!(msg.contains("\n  - model `blocks`: 1 in the checkpoint, 2 here\n  - missing `encoder.stage0.block1.conv1.bias`"), "{msg}");
        assert!(msg.contains("the same `model` as stage `ssl`"), "{msg}");
        // A ViT's head count has no tensor of its own: only the description tells.
        let vit = |heads| EncoderSpec::Vit {
            patch: 4,
            dim: 8,
            depth: 1,
            heads,
            cls_token: false,
            embed_dim: 4,
        };
        let source = build(&e, &vit(2), 1);
        let meta = EncoderMeta {
            spec: vit(2),
            ..meta
        };
        super::super::encoder::save_encoder(dir.path(), &source, &meta).unwrap();
        let file = dir.path().join(ENCODER_FILE);
        let src = InitSource::File {
            path: &file,
            written: "encoder.safetensors",
            names: InitNames::Pretext,
        };
        let mut ps = build(&e, &vit(4), 2);
        let n = ps.entries.len();
        let msg = apply(&e, &mut ps, n, &vit(4), input(), src)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("1 difference:\n  - model `heads`: 2 in the checkpoint, 4 here"),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_files_and_other_dtypes_are_named() {
        let e = Engine::cpu();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"\x10\0\0\0\0\0\0\0{\"a\":").unwrap();
        let spec = resnet();
        let mut ps = build(&e, &spec, 2);
        let n = ps.entries.len();
        let src = InitSource::File {
            path: &path,
            written: "bad.safetensors",
            names: InitNames::Torch,
        };
        let err = apply(&e, &mut ps, n, &spec, input(), src).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("bad.safetensors: not a readable safetensors file"),
            "{err}"
        );
        // An F16 tensor where F32 belongs.
        let half = vec![0u8; 2 * 6];
        let view =
            safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F16, vec![6], &half)
                .unwrap();
        safetensors::serialize_to_file(vec![("fc.bias".to_string(), view)], &None, &path).unwrap();
        let msg = apply(&e, &mut ps, n, &spec, input(), src)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`fc.bias`: dtype F16, expected F32"), "{msg}");
        assert!(msg.contains("v.float()"), "{msg}");
    }
}
