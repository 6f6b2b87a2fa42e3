//! `init = { .. }` of a pretrain or finetune stage: the encoder's starting weights, from an
//! earlier stage's encoder (`encoder = "<stage>"`) or a safetensors file (`path`, `names`).

use toml::Spanned;

use super::super::raw::RawInit;
use super::super::types::{InitConfig, InitNames};
use super::{Result, StageCx};

const NAMES: [(&str, InitNames); 2] =
    [("pretext", InitNames::Pretext), ("torch", InitNames::Torch)];

const INIT_HELP: &str = "write `init = { encoder = \"<stage>\" }` (an earlier pretrain or finetune stage) or `init = { path = \"weights.safetensors\", names = \"pretext\" | \"torch\" }`";

impl StageCx<'_, '_, '_> {
    /// The checked `init` table of a pretrain stage.
    pub(super) fn init(&self, raw: &RawInit) -> Result<InitConfig> {
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
                format!("`{}` needs `encoder` or `path`", self.what("init")),
                Some(INIT_HELP.into()),
            )),
            (Some(_), None) => {
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
            (None, Some(path)) => self.init_file(path, &raw.names),
        }
    }

    /// `init = { path, names }`: the file (relative to the pipeline file) and its names.
    pub(super) fn init_file(
        &self,
        path: &Spanned<String>,
        names: &Option<Spanned<String>>,
    ) -> Result<InitConfig> {
        let written = self.r.non_empty_path(path, &self.what("init.path"))?;
        let names = self.keyword_or(names, InitNames::Pretext, &NAMES, "expected one of", |w| {
            format!("unknown `{}` `{w}`", self.what("init.names"))
        })?;
        Ok(InitConfig::File {
            path: self.r.path(&written),
            names,
        })
    }
}
