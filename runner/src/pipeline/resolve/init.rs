//! `init = { .. }` of a pretrain or finetune stage: the encoder's starting weights, from an
//! earlier stage's encoder (`encoder = "<stage>"`) or a safetensors file (`path`, `names`).

use super::super::raw::RawInit;
use super::super::types::{InitConfig, InitNames};
use super::{Result, StageCx};

const NAMES: [(&str, InitNames); 2] = [("pretext", InitNames::Pretext), ("torch", InitNames::Torch)];

const INIT_HELP: &str = "write `init = { encoder = \"<stage>\" }` (an earlier pretrain or finetune stage) or `init = { path = \"weights.safetensors\", names = \"pretext\" | \"torch\" }`";

impl StageCx<'_, '_, '_> {
    /// The checked `init` table. `stage_allowed`: whether `init.encoder` may name a stage
    /// (pretrain); a finetune stage names its encoder stage with its own `encoder` key.
    pub(super) fn init(&self, raw: &RawInit, stage_allowed: bool) -> Result<InitConfig> {
        match (&raw.encoder, &raw.path) {
            (Some(_), Some(_)) => Err(self.err_key(
                &["init"],
                format!(
                    "`{}` takes `encoder` or `path`, not both",
                    self.what("init")
                ),
                Some(INIT_HELP.into()),
            )),
            (None, None) => Err(self.err_key(
                &["init"],
                format!(
                    "`{}` needs `encoder` or `path`",
                    self.what("init")
                ),
                Some(INIT_HELP.into()),
            )),
            (Some(enc), None) => {
                if !stage_allowed {
                    return Err(self.err_at(
                        enc,
                        format!(
                            "`{}` cannot name a stage in a finetune stage",
                            self.what("init.encoder")
                        ),
                        Some(format!(
                            "fine-tune a stage's encoder with `encoder = \"{}\"` (and no `init`); `init` here reads a file: `init = {{ path = \"weights.safetensors\" }}` with `model`",
                            enc.get_ref()
                        )),
                    ));
                }
                if let Some(n) = &raw.names {
                    return Err(self.err_at(
                        n,
                        format!(
                            "`{}` only applies with `init.path`",
                            self.what("init.names")
                        ),
                        Some("an encoder stage's weights always have pretext's names; remove `names`".into()),
                    ));
                }
                Ok(InitConfig::Encoder)
            }
            (None, Some(path)) => {
                let written = self.r.non_empty_path(path, &self.what("init.path"))?;
                let names = self.keyword_or(
                    &raw.names,
                    InitNames::Pretext,
                    &NAMES,
                    "expected one of",
                    |w| format!("unknown `{}` `{w}`", self.what("init.names")),
                )?;
                Ok(InitConfig::File {
                    path: self.r.path(&written),
                    names,
                })
            }
        }
    }
}
