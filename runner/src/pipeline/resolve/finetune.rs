//! `kind = "finetune"`: the method (full, partial, LoRA, adapter) and its keys, training
//! length, learning rate, batch and label fraction.

use super::super::raw::RawFinetune;
use super::super::types::{FinetuneConfig, FinetuneMethod, InitConfig, ModelConfig};
use super::cx::{choose, FloatRule};
use super::{Result, StageCx};

#[derive(Clone, Copy)]
enum MethodName {
    Full,
    Partial,
    Lora,
    Adapter,
}

const METHODS: [(&str, MethodName); 4] = [
    ("full", MethodName::Full),
    ("partial", MethodName::Partial),
    ("lora", MethodName::Lora),
    ("adapter", MethodName::Adapter),
];

impl StageCx<'_, '_, '_> {
    pub(super) fn finetune(&self, b: &RawFinetune) -> Result<FinetuneConfig> {
        let method = self.finetune_method(b)?;
        let label_fraction = match &b.label_fraction {
            None => 1.0,
            Some(f) => {
                let v = *f.get_ref();
                if !(v > 0.0 && v <= 1.0) {
                    return Err(self.err_at(
                        f,
                        format!("`{}` = {v} must be in (0, 1]", self.what("label_fraction")),
                        None,
                    ));
                }
                v
            }
        };
        let (init, model) = self.finetune_init(b)?;
        Ok(FinetuneConfig {
            init,
            model,
            method,
            epochs: self.int(&b.epochs, "epochs", 1, None, 10)?,
            lr: self.float(&b.lr, "lr", FloatRule::Positive, 1e-3)?,
            batch_size: self.int(&b.batch_size, "batch_size", 2, None, 128)? as usize,
            label_fraction,
        })
    }

    /// Where the encoder comes from: the `encoder` stage (`(None, None)`), or an `init` file
    /// with the `model` it was saved from.
    fn finetune_init(&self, b: &RawFinetune) -> Result<(Option<InitConfig>, Option<ModelConfig>)> {
        match (&b.encoder, b.init.as_deref(), b.model.as_deref()) {
            (Some(_), None, None) => Ok((None, None)),
            (None, Some(init), Some(model)) => {
                if let Some(c) = model.checkpoint_activations.as_ref().filter(|c| *c.get_ref()) {
                    return Err(self.err_span(
                        &c.span(),
                        format!(
                            "`{}` applies to pretrain stages: here `model` only says the \
                             architecture of the `init` file's weights, and fine-tuning keeps \
                             every activation",
                            self.what("model.checkpoint_activations")
                        ),
                        Some("remove `checkpoint_activations`".into()),
                    ));
                }
                Ok((
                    Some(self.init_file(&init.path, &init.names)?),
                    Some(self.model(Some(model))?),
                ))
            }
            (Some(enc), Some(_), _) => Err(self.err_key(
                &["init"],
                format!(
                    "`{}` and `{}` both say where the encoder comes from",
                    self.what("encoder"),
                    self.what("init")
                ),
                Some(format!(
                    "keep `encoder = \"{}\"` to fine-tune that stage's encoder, or remove it to fine-tune the `init` file",
                    enc.get_ref()
                )),
            )),
            (Some(_), None, Some(_)) => Err(self.err_key(
                &["model"],
                format!(
                    "`{}` only applies with `init` (the `encoder` stage's artifact says its architecture)",
                    self.what("model")
                ),
                Some("remove `model`".into()),
            )),
            (None, Some(_), None) => Err(self.err_key(
                &["init"],
                format!(
                    "`{}` needs `model`: the architecture the file's weights belong to",
                    self.what("init")
                ),
                Some("add e.g. `model = { arch = \"resnet\", width = 16, blocks = 1, embed_dim = 128 }`, as in the pretrain stage that made the weights".into()),
            )),
            (None, None, _) => Err(self.err_key(
                &[],
                format!("stage `{}` has no encoder to fine-tune", self.name),
                Some("add `encoder = \"<stage>\"` (a pretrain or finetune stage), or `init = { path = \"weights.safetensors\" }` with `model`".into()),
            )),
        }
    }

    /// `method` and the keys that only some methods take.
    fn finetune_method(&self, b: &RawFinetune) -> Result<FinetuneMethod> {
        let name = b.method.as_ref().map_or("full", |m| m.get_ref().as_str());
        if name != "partial" {
            if let Some(t) = &b.trainable_blocks {
                return Err(self.err_at(
                    t,
                    format!(
                        "`{}` only applies to method = \"partial\"",
                        self.what("trainable_blocks")
                    ),
                    Some(format!(
                        "this stage has method = \"{name}\"; remove `trainable_blocks` or change `method`"
                    )),
                ));
            }
        }
        for (key, given) in [("lora", b.lora.is_some()), ("adapter", b.adapter.is_some())] {
            if name != key && given {
                return Err(self.err_key(
                    &[key],
                    format!("`{}` only applies to method = \"{key}\"", self.what(key)),
                    Some(format!("this stage has method = \"{name}\"")),
                ));
            }
        }
        Ok(match choose(name, &METHODS, "supported methods:") {
            Ok(MethodName::Full) => FinetuneMethod::Full,
            Ok(MethodName::Partial) => FinetuneMethod::Partial {
                trainable_blocks: self.int(&b.trainable_blocks, "trainable_blocks", 1, None, 1)?
                    as usize,
            },
            Ok(MethodName::Lora) => {
                let l = b.lora.as_deref();
                FinetuneMethod::Lora {
                    rank: match l {
                        Some(l) => self.int(&l.rank, "lora.rank", 1, Some(1024), 4)? as usize,
                        None => 4,
                    },
                    alpha: match l {
                        Some(l) => self.float(&l.alpha, "lora.alpha", FloatRule::Positive, 8.0)?,
                        None => 8.0,
                    },
                    layers: l.and_then(|l| l.layers.clone()).unwrap_or_default(),
                }
            }
            Ok(MethodName::Adapter) => {
                let a = b.adapter.as_deref();
                FinetuneMethod::Adapter {
                    bottleneck: match a {
                        Some(a) => {
                            self.int(&a.bottleneck, "adapter.bottleneck", 1, None, 16)? as usize
                        }
                        None => 16,
                    },
                    layers: a.and_then(|a| a.layers.clone()).unwrap_or_default(),
                }
            }
            Err(help) => {
                let m = b.method.as_ref().expect("the default method is known");
                let message = format!("unknown finetune method `{name}`");
                return Err(self.err_at(m, message, Some(help)));
            }
        })
    }
}
