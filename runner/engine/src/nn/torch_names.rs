//! PyTorch names and layouts for pretext's encoders: which tensor of a PyTorch state dict of
//! the same architecture each encoder entry comes from, and how its values are rearranged.
//!
//! pretext stores every tensor as a 2-D `(rows, cols)` matrix: a linear weight is `(in, out)`
//! (`y = x W + b`), a convolution is a linear layer over im2col patches whose rows run over
//! `(ky, kx, c)`, biases and norm parameters are `(1, n)`. PyTorch keeps `nn.Linear` weights as
//! `[out, in]`, `nn.Conv2d` weights as `[out, in, kh, kw]` and vectors as `[n]`. The module
//! layout chosen for each architecture is the one a PyTorch user would write for it (the
//! torchvision ResNet and timm ViT names where the architectures agree);
//! `tests/reference/torch_bench.py` builds those modules and `export_torch_init.py` writes a
//! state dict of them.
//!
//! | pretext | PyTorch |
//! |---|---|
//! | MLP `encoder.{i}` (`.bn`) | `net.{k·i}` (`net.{k·i+1}`), k = 3 with batch norm (Linear, BatchNorm1d, ReLU), 2 without |
//! | ConvNet `encoder.conv{i}` (`.bn`), `encoder.head` | `conv{i+1}` (`bn{i+1}`), `fc` |
//! | ResNet `encoder.stem` (`.bn`) | `conv1` (`bn1`) |
//! | ResNet `encoder.stage{s}.block{b}.conv{j}` (`.bn`) | `layer{s+1}.{b}.conv{j}` (`layer{s+1}.{b}.bn{j}`) |
//! | ResNet `encoder.stage{s}.block{b}.shortcut` (`.bn`) | `layer{s+1}.{b}.downsample.0` (`.downsample.1`) |
//! | ResNet `encoder.head` | `fc` |
//! | ViT `encoder.patch_embed` | `patch_embed.proj` (a Conv2d with kernel = stride = patch) |
//! | ViT `encoder.pos_embed`, `encoder.cls_token` | `pos_embed` `[1, T, d]` (patch tokens only), `cls_token` `[1, 1, d]` |
//! | ViT `encoder.block{i}.{q,k,v}` | the three thirds of `blocks.{i}.attn.qkv` (`[3d, d]`) |
//! | ViT `encoder.block{i}.o`, `.fc1`, `.fc2` | `blocks.{i}.attn.proj`, `.mlp.fc1`, `.mlp.fc2` |
//! | ViT `encoder.block{i}.ln1`, `.ln2`, `encoder.norm`, `encoder.head` | `blocks.{i}.norm1`, `.norm2`, `norm`, `head` |
//!
//! Leaf names: `weight`, `bias`; batch and layer norm `gamma` → `weight`, `beta` → `bias`,
//! `running_mean`, `running_var` unchanged. BatchNorm's `num_batches_tracked` has no pretext
//! counterpart and is ignored ([`ignored`]). The text transformer has no mapping.

use super::encoders::{EncoderSpec, InputShape};
use crate::conv::ConvSpec;

/// How a PyTorch tensor's values become one pretext entry of `(rows, cols)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[n]` → `(1, n)`: biases, norm scales and shifts, running statistics.
    Vector,
    /// `nn.Linear` weight `[out, in]` → `(in, out)`.
    Linear,
    /// `nn.Conv2d` weight `[out, in, k, k]` → `(k·k·in, out)`, rows in `(ky, kx, c)` order.
    Conv { kernel: usize },
    /// A linear weight over a flattened NCHW feature map, `[out, c·h·w]` (inputs in `(c, y,
    /// x)` order) → `(h·w·c, out)`, rows in pretext's channel-last `(y, x, c)` order.
    Flattened {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// One third (`part` 0, 1, 2: q, k, v) of a fused `[3d, d]` weight → `(d, d)`.
    QkvWeight { part: usize },
    /// One third of a fused `[3d]` bias → `(1, d)`.
    QkvBias { part: usize },
    /// `[1, r, c]` → `(r, c)`: the ViT's position embeddings and CLS token.
    Batched,
}

/// Where one pretext entry comes from in a PyTorch state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorchName {
    /// The PyTorch tensor's name.
    pub torch: String,
    pub layout: Layout,
}

/// State-dict entries PyTorch modules have and pretext ignores: BatchNorm's step counter.
pub fn ignored(torch_name: &str) -> bool {
    torch_name == "num_batches_tracked" || torch_name.ends_with(".num_batches_tracked")
}

impl Layout {
    /// The shape of the PyTorch tensor a pretext entry of `(rows, cols)` is read from.
    pub fn torch_shape(self, rows: usize, cols: usize) -> Vec<usize> {
        match self {
            Layout::Vector => vec![cols],
            Layout::Linear | Layout::Flattened { .. } => vec![cols, rows],
            Layout::Conv { kernel } => {
                vec![cols, rows / (kernel * kernel).max(1), kernel, kernel]
            }
            Layout::QkvWeight { .. } => vec![3 * cols, rows],
            Layout::QkvBias { .. } => vec![3 * cols],
            Layout::Batched => vec![1, rows, cols],
        }
    }

    /// The pretext values `(rows, cols)`, row-major, from the PyTorch tensor's values (row-major
    /// over [`Layout::torch_shape`]; the caller has checked the shape).
    pub fn to_pretext(self, src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                out[r * cols + c] = src[self.torch_index(r, c, rows, cols)];
            }
        }
        out
    }

    /// The PyTorch tensor's values (row-major over [`Layout::torch_shape`]) that hold pretext
    /// values `(rows, cols)`; for the fused q/k/v layouts, only this part's third is written
    /// into `dst` (of the fused tensor's length).
    pub fn to_torch(self, src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        for r in 0..rows {
            for c in 0..cols {
                dst[self.torch_index(r, c, rows, cols)] = src[r * cols + c];
            }
        }
    }

    /// The flat index in the PyTorch tensor of pretext element `(r, c)`.
    fn torch_index(self, r: usize, c: usize, rows: usize, cols: usize) -> usize {
        match self {
            Layout::Vector | Layout::Batched => r * cols + c,
            // [out, in]: element (out = c, in = r).
            Layout::Linear => c * rows + r,
            Layout::Conv { kernel } => {
                let cin = rows / (kernel * kernel).max(1);
                let (tap, ch) = (r / cin, r % cin);
                let (ky, kx) = (tap / kernel, tap % kernel);
                ((c * cin + ch) * kernel + ky) * kernel + kx
            }
            Layout::Flattened {
                channels,
                height,
                width,
            } => {
                let (pos, ch) = (r / channels, r % channels);
                let (y, x) = (pos / width, pos % width);
                c * rows + (ch * height + y) * width + x
            }
            // [3d, d]: output row part·d + c of input r.
            Layout::QkvWeight { part } => (part * cols + c) * rows + r,
            Layout::QkvBias { part } => part * cols + c,
        }
    }
}

/// What a module is, for its leaves' layouts.
#[derive(Clone, Copy)]
enum Module {
    Linear,
    Conv(usize),
    Norm,
    Flattened(usize, usize, usize),
    Qkv(usize),
}

/// The PyTorch name and layout of the encoder entry `name` (as [`crate::nn::Encoder::new`]
/// names it for `spec` on `input`); `None` for a name the architecture does not have, or an
/// architecture without a mapping (the text transformer).
pub fn torch_name(spec: &EncoderSpec, input: InputShape, name: &str) -> Option<TorchName> {
    let rest = name.strip_prefix("encoder.")?;
    if let EncoderSpec::Vit { .. } = spec {
        if rest == "pos_embed" || rest == "cls_token" {
            return Some(TorchName {
                torch: rest.to_string(),
                layout: Layout::Batched,
            });
        }
    }
    let (path, leaf) = rest.rsplit_once('.')?;
    let seg: Vec<&str> = path.split('.').collect();
    let (torch_path, module) = match spec {
        EncoderSpec::Mlp { batch_norm, .. } => mlp(&seg, *batch_norm)?,
        EncoderSpec::ConvNet { width, flatten, .. } => convnet(&seg, *width, *flatten, input)?,
        EncoderSpec::ResNet { .. } => resnet(&seg)?,
        EncoderSpec::Vit { patch, .. } => vit(&seg, *patch)?,
        EncoderSpec::Text { .. } => return None,
    };
    let (torch_leaf, layout) = match (module, leaf) {
        (Module::Norm, "gamma") => ("weight", Layout::Vector),
        (Module::Norm, "beta") => ("bias", Layout::Vector),
        (Module::Norm, "running_mean" | "running_var") => (leaf, Layout::Vector),
        (Module::Norm, _) => return None,
        (_, "bias") => match module {
            Module::Qkv(part) => ("bias", Layout::QkvBias { part }),
            _ => ("bias", Layout::Vector),
        },
        (Module::Linear, "weight") => ("weight", Layout::Linear),
        (Module::Conv(kernel), "weight") => ("weight", Layout::Conv { kernel }),
        (Module::Flattened(channels, height, width), "weight") => (
            "weight",
            Layout::Flattened {
                channels,
                height,
                width,
            },
        ),
        (Module::Qkv(part), "weight") => ("weight", Layout::QkvWeight { part }),
        _ => return None,
    };
    Some(TorchName {
        torch: format!("{torch_path}.{torch_leaf}"),
        layout,
    })
}

fn index(s: &str, prefix: &str) -> Option<usize> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// `encoder.{i}` → `net.{k·i}`, `encoder.{i}.bn` → `net.{k·i+1}` (an `nn.Sequential` of
/// Linear, BatchNorm1d, ReLU per hidden layer: k = 3; Linear, ReLU without batch norm: k = 2).
fn mlp(seg: &[&str], batch_norm: bool) -> Option<(String, Module)> {
    let stride = if batch_norm { 3 } else { 2 };
    match seg {
        [i] => Some((
            format!("net.{}", stride * i.parse::<usize>().ok()?),
            Module::Linear,
        )),
        [i, "bn"] if batch_norm => Some((
            format!("net.{}", stride * i.parse::<usize>().ok()? + 1),
            Module::Norm,
        )),
        _ => None,
    }
}

/// `encoder.conv{i}` → `conv{i+1}`, `.bn` → `bn{i+1}`, `encoder.head` → `fc`.
fn convnet(
    seg: &[&str],
    width: usize,
    flatten: bool,
    input: InputShape,
) -> Option<(String, Module)> {
    match seg {
        ["head"] if flatten => {
            // Two stride-2 convolutions: the last map is ⌈H/4⌉ x ⌈W/4⌉ with 4w channels.
            let down = ConvSpec {
                kernel: 3,
                stride: 2,
                padding: 1,
            };
            let (h1, w1) = down.out_hw(input.height, input.width);
            let (h2, w2) = down.out_hw(h1, w1);
            Some(("fc".into(), Module::Flattened(4 * width, h2, w2)))
        }
        ["head"] => Some(("fc".into(), Module::Linear)),
        [c] => Some((format!("conv{}", index(c, "conv")? + 1), Module::Conv(3))),
        [c, "bn"] => Some((format!("bn{}", index(c, "conv")? + 1), Module::Norm)),
        _ => None,
    }
}

/// The torchvision names: `conv1`/`bn1` for the stem, `layer{s+1}.{b}` for the blocks
/// (`conv1`, `bn1`, `conv2`, `bn2`, `downsample.0`/`.1`), `fc` for the head.
fn resnet(seg: &[&str]) -> Option<(String, Module)> {
    match seg {
        ["stem"] => Some(("conv1".into(), Module::Conv(3))),
        ["stem", "bn"] => Some(("bn1".into(), Module::Norm)),
        ["head"] => Some(("fc".into(), Module::Linear)),
        [stage, block, layer, rest @ ..] => {
            let s = index(stage, "stage")?;
            let b = index(block, "block")?;
            let base = format!("layer{}.{b}", s + 1);
            match (*layer, rest) {
                ("shortcut", []) => Some((format!("{base}.downsample.0"), Module::Conv(1))),
                ("shortcut", ["bn"]) => Some((format!("{base}.downsample.1"), Module::Norm)),
                (conv, []) => {
                    let j = index(conv, "conv").filter(|j| (1..=2).contains(j))?;
                    Some((format!("{base}.conv{j}"), Module::Conv(3)))
                }
                (conv, ["bn"]) => {
                    let j = index(conv, "conv").filter(|j| (1..=2).contains(j))?;
                    Some((format!("{base}.bn{j}"), Module::Norm))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The timm names (`patch_embed.proj`, `blocks.{i}.attn.qkv`, `.attn.proj`, `.norm1`,
/// `.norm2`, `.mlp.fc1`, `.mlp.fc2`, `norm`, `head`).
fn vit(seg: &[&str], patch: usize) -> Option<(String, Module)> {
    match seg {
        ["patch_embed"] => Some(("patch_embed.proj".into(), Module::Conv(patch))),
        ["norm"] => Some(("norm".into(), Module::Norm)),
        ["head"] => Some(("head".into(), Module::Linear)),
        [block, layer] => {
            let i = index(block, "block")?;
            let (sub, module) = match *layer {
                "q" => ("attn.qkv", Module::Qkv(0)),
                "k" => ("attn.qkv", Module::Qkv(1)),
                "v" => ("attn.qkv", Module::Qkv(2)),
                "o" => ("attn.proj", Module::Linear),
                "ln1" => ("norm1", Module::Norm),
                "ln2" => ("norm2", Module::Norm),
                "fc1" => ("mlp.fc1", Module::Linear),
                "fc2" => ("mlp.fc2", Module::Linear),
                _ => return None,
            };
            Some((format!("blocks.{i}.{sub}"), module))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Encoder, Init, ParamStore};
    use crate::Engine;

    fn input() -> InputShape {
        InputShape {
            channels: 2,
            height: 8,
            width: 8,
        }
    }

    /// The names of an encoder built from `spec`, mapped.
    fn mapped(spec: &EncoderSpec) -> Vec<(String, TorchName)> {
        let e = Engine::cpu();
        let mut ps = ParamStore::default();
        Encoder::new(&e, &mut ps, &mut Init::new(1), spec, input()).unwrap();
        ps.entries
            .iter()
            .map(|en| {
                let t = torch_name(spec, input(), &en.name)
                    .unwrap_or_else(|| panic!("{spec:?}: no torch name for {}", en.name));
                (en.name.clone(), t)
            })
            .collect()
    }

    fn find<'a>(m: &'a [(String, TorchName)], name: &str) -> &'a TorchName {
        &m.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn resnet_entries_get_torchvision_names() {
        let spec = EncoderSpec::ResNet {
            width: 4,
            blocks: 2,
            embed_dim: 8,
            batch_norm: true,
        };
        let m = mapped(&spec);
        let t = |n: &str| find(&m, n).torch.clone();
        assert_eq!(t("encoder.stem.weight"), "conv1.weight");
        assert_eq!(t("encoder.stem.bn.gamma"), "bn1.weight");
        assert_eq!(t("encoder.stem.bn.running_mean"), "bn1.running_mean");
        assert_eq!(t("encoder.stage0.block1.conv2.bias"), "layer1.1.conv2.bias");
        assert_eq!(
            t("encoder.stage1.block0.conv1.bn.beta"),
            "layer2.0.bn1.bias"
        );
        assert_eq!(
            t("encoder.stage2.block0.shortcut.weight"),
            "layer3.0.downsample.0.weight"
        );
        assert_eq!(
            t("encoder.stage2.block0.shortcut.bn.running_var"),
            "layer3.0.downsample.1.running_var"
        );
        assert_eq!(t("encoder.head.weight"), "fc.weight");
        assert_eq!(
            find(&m, "encoder.stage1.block0.shortcut.weight").layout,
            Layout::Conv { kernel: 1 }
        );
        assert_eq!(
            find(&m, "encoder.stem.weight").layout,
            Layout::Conv { kernel: 3 }
        );
        // Every torch name is used once (no two pretext entries read the same tensor).
        let mut names: Vec<&String> = m.iter().map(|(_, t)| &t.torch).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn vit_entries_get_timm_names_with_a_fused_qkv() {
        let spec = EncoderSpec::Vit {
            patch: 4,
            dim: 8,
            depth: 2,
            heads: 2,
            cls_token: true,
            embed_dim: 4,
        };
        let m = mapped(&spec);
        let t = |n: &str| find(&m, n).clone();
        assert_eq!(
            t("encoder.patch_embed.weight"),
            TorchName {
                torch: "patch_embed.proj.weight".into(),
                layout: Layout::Conv { kernel: 4 }
            }
        );
        assert_eq!(t("encoder.pos_embed").torch, "pos_embed");
        assert_eq!(t("encoder.cls_token").layout, Layout::Batched);
        assert_eq!(
            t("encoder.block1.k.weight"),
            TorchName {
                torch: "blocks.1.attn.qkv.weight".into(),
                layout: Layout::QkvWeight { part: 1 }
            }
        );
        assert_eq!(
            t("encoder.block0.v.bias").layout,
            Layout::QkvBias { part: 2 }
        );
        assert_eq!(
            t("encoder.block0.o.weight").torch,
            "blocks.0.attn.proj.weight"
        );
        assert_eq!(t("encoder.block0.ln2.gamma").torch, "blocks.0.norm2.weight");
        assert_eq!(t("encoder.block1.fc1.bias").torch, "blocks.1.mlp.fc1.bias");
        assert_eq!(t("encoder.norm.beta").torch, "norm.bias");
        assert_eq!(t("encoder.head.weight").torch, "head.weight");
    }

    #[test]
    fn mlp_and_convnet_names() {
        let m = mapped(&EncoderSpec::Mlp {
            hidden: vec![6, 5],
            embed_dim: 4,
            batch_norm: true,
        });
        assert_eq!(find(&m, "encoder.1.weight").torch, "net.3.weight");
        assert_eq!(find(&m, "encoder.1.bn.gamma").torch, "net.4.weight");
        assert_eq!(find(&m, "encoder.2.bias").torch, "net.6.bias");
        let m = mapped(&EncoderSpec::Mlp {
            hidden: vec![6],
            embed_dim: 4,
            batch_norm: false,
        });
        assert_eq!(find(&m, "encoder.1.weight").torch, "net.2.weight");
        let m = mapped(&EncoderSpec::ConvNet {
            width: 4,
            embed_dim: 4,
            batch_norm: true,
            flatten: true,
        });
        assert_eq!(find(&m, "encoder.conv2.weight").torch, "conv3.weight");
        assert_eq!(
            find(&m, "encoder.conv0.bn.running_var").torch,
            "bn1.running_var"
        );
        assert_eq!(
            find(&m, "encoder.head.weight").layout,
            Layout::Flattened {
                channels: 16,
                height: 2,
                width: 2
            }
        );
    }

    #[test]
    fn names_outside_the_architecture_and_text_have_no_mapping() {
        let spec = EncoderSpec::ResNet {
            width: 4,
            blocks: 1,
            embed_dim: 8,
            batch_norm: true,
        };
        assert_eq!(torch_name(&spec, input(), "projector.0.weight"), None);
        assert_eq!(
            torch_name(&spec, input(), "encoder.stage0.block0.conv3.weight"),
            None
        );
        assert_eq!(torch_name(&spec, input(), "encoder.stem.bn.scale"), None);
        let text = EncoderSpec::Text {
            vocab: 10,
            seq_len: 4,
            dim: 8,
            depth: 1,
            heads: 2,
            cls_pool: false,
            dropout: 0.0,
            embed_dim: 4,
        };
        assert_eq!(torch_name(&text, input(), "encoder.head.weight"), None);
        assert!(ignored("bn1.num_batches_tracked"));
        assert!(!ignored("bn1.running_mean"));
    }

    /// Each layout reads PyTorch's element for every pretext element: checked against the
    /// index arithmetic written out by hand, and `to_torch` inverts `to_pretext`.
    #[test]
    fn layouts_move_elements_as_pytorch_lays_them_out() {
        // Conv [out=2, in=3, 2, 2] → (2·2·3, 2): pretext row (ky·2 + kx)·3 + c.
        let conv = Layout::Conv { kernel: 2 };
        assert_eq!(conv.torch_shape(12, 2), vec![2, 3, 2, 2]);
        let torch: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let p = conv.to_pretext(&torch, 12, 2);
        let (o, c, ky, kx) = (1, 2, 1, 0);
        assert_eq!(
            p[((ky * 2 + kx) * 3 + c) * 2 + o],
            torch[((o * 3 + c) * 2 + ky) * 2 + kx]
        );
        // Linear [out=3, in=2] → (2, 3).
        let lin = Layout::Linear;
        let torch: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(lin.to_pretext(&torch, 2, 3), vec![0., 2., 4., 1., 3., 5.]);
        // Flattened [out=1, c=2·h=1·w=2] → rows (y, x, c).
        let flat = Layout::Flattened {
            channels: 2,
            height: 1,
            width: 2,
        };
        // torch inputs (c, x): (0,0)=10 (0,1)=11 (1,0)=12 (1,1)=13 → pretext (x, c).
        assert_eq!(
            flat.to_pretext(&[10., 11., 12., 13.], 4, 1),
            vec![10., 12., 11., 13.]
        );
        // Fused qkv [3·2, 2]: k is rows 2..4.
        let k = Layout::QkvWeight { part: 1 };
        assert_eq!(k.torch_shape(2, 2), vec![6, 2]);
        let torch: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(k.to_pretext(&torch, 2, 2), vec![4., 6., 5., 7.]);
        assert_eq!(
            Layout::QkvBias { part: 2 }.to_pretext(&[0., 1., 2., 3., 4., 5.], 1, 2),
            vec![4., 5.]
        );
        for (layout, rows, cols) in [
            (conv, 12, 2),
            (lin, 2, 3),
            (flat, 4, 1),
            (Layout::Vector, 1, 5),
            (Layout::Batched, 3, 2),
        ] {
            let vals: Vec<f32> = (0..rows * cols).map(|v| v as f32 * 0.5).collect();
            let mut t = vec![0f32; rows * cols];
            layout.to_torch(&vals, rows, cols, &mut t);
            assert_eq!(layout.to_pretext(&t, rows, cols), vals, "{layout:?}");
        }
        let mut fused = vec![0f32; 3 * 2 * 2];
        for part in 0..3 {
            let vals: Vec<f32> = (0..4).map(|v| (part * 10 + v) as f32).collect();
            Layout::QkvWeight { part }.to_torch(&vals, 2, 2, &mut fused);
        }
        for part in 0..3 {
            let got = Layout::QkvWeight { part }.to_pretext(&fused, 2, 2);
            let want: Vec<f32> = (0..4).map(|v| (part * 10 + v) as f32).collect();
            assert_eq!(got, want);
        }
    }
}
