//! A pretrain stage's `model = { arch = .., .. }`: which keys each architecture takes, and
//! their defaults.

use std::ops::Range;

use super::super::raw::RawModel;
use super::super::types::{Arch, ModelConfig, Pool};
use super::super::PipelineError;
use super::cx::{choose, FloatRule};
use super::{Result, StageCx};

#[derive(Clone, Copy, PartialEq, Eq)]
enum ArchName {
    Mlp,
    Convnet,
    Resnet,
    Vit,
    Transformer,
}

const ARCHS: [(&str, ArchName); 5] = [
    ("mlp", ArchName::Mlp),
    ("convnet", ArchName::Convnet),
    ("resnet", ArchName::Resnet),
    ("vit", ArchName::Vit),
    ("transformer", ArchName::Transformer),
];
const ATTENTION_POOLS: [(&str, Pool); 2] = [("cls", Pool::Cls), ("mean", Pool::Mean)];
/// Convnet pools: `flatten` or not.
const CONVNET_POOLS: [(&str, bool); 2] = [("mean", false), ("flatten", true)];

impl StageCx<'_, '_, '_> {
    pub(super) fn model(&self, m: Option<&RawModel>) -> Result<ModelConfig> {
        let Some(m) = m else {
            return Ok(ModelConfig {
                arch: Arch::Mlp {
                    hidden: vec![512, 512],
                },
                embed_dim: 128,
                batch_norm: true,
                checkpoint_activations: false,
            });
        };
        let arch_name = m.arch.as_ref().map_or("mlp", |a| a.get_ref().as_str());
        let only_for = |key: &str, archs: &[&str], span: Range<usize>| {
            self.only_for_arch(key, archs, arch_name, span)
        };
        // Keys of other architectures, checked before the architecture's name.
        if arch_name != "vit" && arch_name != "transformer" {
            for (key, span) in [
                ("dim", m.dim.as_ref().map(|v| v.span())),
                ("depth", m.depth.as_ref().map(|v| v.span())),
                ("heads", m.heads.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    return Err(only_for(key, &["vit", "transformer"], span));
                }
            }
        }
        if !matches!(arch_name, "vit" | "transformer" | "convnet") {
            if let Some(p) = &m.pool {
                return Err(only_for(
                    "pool",
                    &["vit", "transformer", "convnet"],
                    p.span(),
                ));
            }
        }
        if arch_name != "vit" {
            if let Some(p) = &m.patch {
                return Err(only_for("patch", &["vit"], p.span()));
            }
        }
        if let Some(c) = m.checkpoint_activations.as_ref().filter(|c| *c.get_ref()) {
            if matches!(arch_name, "mlp" | "convnet") {
                return Err(self.err_span(
                    &c.span(),
                    format!(
                        "`{}` needs an encoder made of blocks: arch = \"resnet\", \"vit\" or \
                         \"transformer\" (this model has arch = \"{arch_name}\", which has none \
                         to recompute)",
                        self.what("model.checkpoint_activations")
                    ),
                    Some(
                        "remove `checkpoint_activations`, or choose a resnet, vit or transformer \
                         encoder"
                            .into(),
                    ),
                ));
            }
        }
        if arch_name != "transformer" {
            if let Some(d) = &m.dropout {
                return Err(only_for("dropout", &["transformer"], d.span()));
            }
        }
        let arch = match choose(arch_name, &ARCHS, "supported archs:") {
            Ok(name @ (ArchName::Vit | ArchName::Transformer)) => {
                self.attention_arch(m, name, arch_name)?
            }
            Ok(ArchName::Mlp) => {
                if let Some(w) = &m.width {
                    return Err(only_for("width", &["convnet", "resnet"], w.span()));
                }
                if let Some(b) = &m.blocks {
                    return Err(only_for("blocks", &["resnet"], b.span()));
                }
                let hidden = match &m.hidden {
                    None => vec![512, 512],
                    Some(h) => h
                        .get_ref()
                        .iter()
                        .map(|v| {
                            self.r
                                .int(v, &self.what("model.hidden"), 1, None)
                                .map(|x| x as usize)
                        })
                        .collect::<Result<_>>()?,
                };
                Arch::Mlp { hidden }
            }
            Ok(ArchName::Convnet) => {
                if let Some(h) = &m.hidden {
                    return Err(only_for("hidden", &["mlp"], h.span()));
                }
                if let Some(b) = &m.blocks {
                    return Err(only_for("blocks", &["resnet"], b.span()));
                }
                let intro = "supported for arch = \"convnet\":";
                let flatten = self.keyword_or(&m.pool, false, &CONVNET_POOLS, intro, |w| {
                    format!("unknown pool `{w}`")
                })?;
                Arch::Convnet {
                    width: self.int(&m.width, "model.width", 1, None, 16)? as usize,
                    flatten,
                }
            }
            Ok(ArchName::Resnet) => {
                if let Some(h) = &m.hidden {
                    return Err(only_for("hidden", &["mlp"], h.span()));
                }
                Arch::Resnet {
                    width: self.int(&m.width, "model.width", 1, None, 16)? as usize,
                    blocks: self.int(&m.blocks, "model.blocks", 1, Some(8), 1)? as usize,
                }
            }
            Err(help) => {
                let arch = m.arch.as_ref().expect("the default arch is known");
                let message = format!("unknown model arch `{arch_name}`");
                return Err(self.err_at(arch, message, Some(help)));
            }
        };
        Ok(ModelConfig {
            arch,
            embed_dim: self.int(&m.embed_dim, "model.embed_dim", 1, None, 128)? as usize,
            batch_norm: m.batch_norm.unwrap_or(true),
            checkpoint_activations: m
                .checkpoint_activations
                .as_ref()
                .is_some_and(|c| *c.get_ref()),
        })
    }

    /// `arch = "vit"` or `"transformer"` (`arch_name` as written).
    fn attention_arch(&self, m: &RawModel, name: ArchName, arch_name: &str) -> Result<Arch> {
        for (key, span) in [
            ("hidden", m.hidden.as_ref().map(|v| v.span())),
            ("width", m.width.as_ref().map(|v| v.span())),
            ("blocks", m.blocks.as_ref().map(|v| v.span())),
        ] {
            if let Some(span) = span {
                let archs = [if key == "hidden" {
                    "mlp"
                } else {
                    "convnet\" or \"resnet"
                }];
                return Err(self.only_for_arch(key, &archs, arch_name, span));
            }
        }
        let dim = self.int(&m.dim, "model.dim", 1, None, 64)? as usize;
        let heads = self.int(&m.heads, "model.heads", 1, None, 4)? as usize;
        if !dim.is_multiple_of(heads) {
            let span = m
                .heads
                .as_ref()
                .or(m.dim.as_ref())
                .map(|v| v.span())
                .unwrap_or(0..0);
            return Err(self.err_span(
                &span,
                format!(
                    "`{}` ({dim}) must be divisible by `heads` ({heads})",
                    self.what("model.dim")
                ),
                Some("choose heads that divide dim, e.g. dim = 64, heads = 4".into()),
            ));
        }
        let transformer = name == ArchName::Transformer;
        let default_pool = if transformer { Pool::Mean } else { Pool::Cls };
        let pool = self.keyword_or(&m.pool, default_pool, &ATTENTION_POOLS, "supported:", |w| {
            format!("unknown pool `{w}`")
        })?;
        let depth = self.int(&m.depth, "model.depth", 1, Some(64), 4)? as usize;
        Ok(if transformer {
            let dropout = match &m.dropout {
                None => 0.0,
                Some(v) => self
                    .r
                    .float(v, &self.what("model.dropout"), FloatRule::HalfOpenUnit)?,
            };
            Arch::Transformer {
                dim,
                depth,
                heads,
                pool,
                dropout,
            }
        } else {
            Arch::Vit {
                patch: self.int(&m.patch, "model.patch", 1, None, 7)? as usize,
                dim,
                depth,
                heads,
                pool,
            }
        })
    }

    /// `model.<key>` is set, but only `archs` take it.
    fn only_for_arch(
        &self,
        key: &str,
        archs: &[&str],
        arch_name: &str,
        span: Range<usize>,
    ) -> PipelineError {
        let allowed: Vec<String> = archs.iter().map(|a| format!("\"{a}\"")).collect();
        self.err_span(
            &span,
            format!(
                "`{}` only applies to arch = {}",
                self.what(&format!("model.{key}")),
                allowed.join(" or ")
            ),
            Some(format!(
                "this model has arch = \"{arch_name}\"; remove `{key}` or change `arch`"
            )),
        )
    }
}
