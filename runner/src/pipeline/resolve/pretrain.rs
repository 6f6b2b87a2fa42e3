//! `kind = "pretrain"`: the objective plugin, training length and batch, gradient clipping and
//! accumulation, and the collapse check. `model` and `optim` have files of their own.

use toml::Spanned;

use super::super::raw::{RawPhase, RawPretrain, RawTextTower, Tbl};
use super::super::types::{CollapseConfig, CurriculumPhase, Objective, PretrainConfig, TextTower};

use super::cx::FloatRule;
use super::{Result, StageCx};

const OBJECTIVE_HELP: &str =
    "name the objective plugin, e.g. objective = { plugin = \"simclr\", temperature = 0.5 }";

impl StageCx<'_, '_, '_> {
    pub(super) fn pretrain(&self, b: &RawPretrain) -> Result<PretrainConfig> {
        let (plugin, params) = self.named_table(
            &b.objective,
            &self.segs(&["objective"]),
            &self.what("objective"),
            "plugin",
        )?;
        let Some(plugin) = plugin else {
            return Err(self.err_key(
                &["objective"],
                format!("missing key `plugin` in [{}]", self.what("objective")),
                Some(OBJECTIVE_HELP.into()),
            ));
        };
        let objective = Objective { plugin, params };
        let model = self.model(b.model.as_deref())?;
        let init = b.init.as_deref().map(|i| self.init(i)).transpose()?;
        // An imported encoder may be saved as it is (epochs = 0), e.g. for a probe.
        let min_epochs = if init.is_some() { 0 } else { 1 };
        let batch_size = self.int(&b.batch_size, "batch_size", 1, None, 256)? as usize;
        let curriculum = match &b.curriculum {
            Some(c) => self.curriculum(c, batch_size)?,
            None => Vec::new(),
        };
        let epochs = match &b.epochs {
            _ if !curriculum.is_empty() => self.curriculum_epochs(b, &curriculum)?,
            Some(v) if *v.get_ref() == 0 && init.is_none() => {
                return Err(self.err_at(
                    v,
                    format!("`{}` = 0 trains nothing", self.what("epochs")),
                    Some("epochs = 0 only applies with `init` (to save an imported encoder as it is); set epochs >= 1".into()),
                ))
            }
            _ => self.int(&b.epochs, "epochs", min_epochs, None, 10)?,
        };
        let optim = self.optim(b.optim.as_deref(), epochs.max(1))?;
        let grad_clip = b
            .grad_clip
            .as_ref()
            .map(|v| {
                self.r
                    .float(v, &self.what("grad_clip"), FloatRule::Positive)
            })
            .transpose()?;
        let accumulate = self.int(&b.accumulate, "accumulate", 1, Some(1024), 1)?;
        let collapse = match b.collapse.as_deref() {
            None => CollapseConfig {
                min_std: 0.01,
                patience: 2,
            },
            Some(c) => CollapseConfig {
                min_std: self.float(
                    &c.min_std,
                    "collapse.min_std",
                    FloatRule::NonNegative,
                    0.01,
                )?,
                patience: self.int(&c.patience, "collapse.patience", 1, None, 2)?,
            },
        };
        Ok(PretrainConfig {
            objective,
            model,
            optim,
            epochs,
            batch_size,
            grad_clip,
            accumulate,
            collapse,
            init,
            curriculum,
            text: b.text.as_deref().map(|t| self.text_tower(t)).transpose()?,
        })
    }

    /// `text = { input, dim, depth, heads, dropout, prompt }`: the captions and text tower.
    fn text_tower(&self, t: &RawTextTower) -> Result<TextTower> {
        let dim = self.int(&t.dim, "text.dim", 1, Some(4096), 64)? as usize;
        let heads = self.int(&t.heads, "text.heads", 1, Some(64), 4)? as usize;
        if dim % heads != 0 {
            let at = t.heads.as_ref().or(t.dim.as_ref());
            let message = format!(
                "`{}` = {dim} is not divisible by `{}` = {heads}",
                self.what("text.dim"),
                self.what("text.heads")
            );
            let help = Some(
                "each attention head takes dim / heads channels: e.g. dim = 64, heads = 4".into(),
            );
            return Err(match at {
                Some(v) => self.err_at(v, message, help),
                None => self.err_key(&["text"], message, help),
            });
        }
        let prompt = match &t.prompt {
            None => "{}".to_string(),
            Some(p) if p.get_ref().matches("{}").count() == 1 => p.get_ref().clone(),
            Some(p) => {
                return Err(self.err_at(
                    p,
                    format!(
                        "`{}` must hold `{{}}` exactly once, where the class name goes",
                        self.what("text.prompt")
                    ),
                    Some("e.g. prompt = \"a handwritten {}\"".into()),
                ))
            }
        };
        let pairings = [("id", false), ("path", true)];
        let by_path = self.keyword_or(&t.pair_by, false, &pairings, "expected one of", |w| {
            format!("unknown pairing `{w}` in `{}`", self.what("text.pair_by"))
        })?;
        Ok(TextTower {
            by_path,
            input: t.input.get_ref().clone(),
            dim,
            depth: self.int(&t.depth, "text.depth", 1, Some(64), 2)? as usize,
            heads,
            dropout: self.float(&t.dropout, "text.dropout", FloatRule::HalfOpenUnit, 0.0)?,
            prompt,
        })
    }

    /// `curriculum = [{ epochs, size, scale, batch_size }, ..]`: at least one phase, each with
    /// its epochs; what a phase leaves out is the stage's setting.
    fn curriculum(
        &self,
        c: &Spanned<Vec<Spanned<Tbl<RawPhase>>>>,
        batch_size: usize,
    ) -> Result<Vec<CurriculumPhase>> {
        if c.get_ref().is_empty() {
            return Err(self.err_at(
                c,
                format!("`{}` has no phases", self.what("curriculum")),
                Some("list the phases in order, e.g. curriculum = [{ epochs = 4, size = 16 }, { epochs = 6 }], or remove the key for one flat schedule".into()),
            ));
        }
        c.get_ref()
            .iter()
            .enumerate()
            .map(|(i, ph)| {
                let what = |key: &str| self.what(&format!("curriculum[{i}].{key}"));
                let Some(epochs) = &ph.get_ref().epochs else {
                    return Err(self.err_at(
                        ph,
                        format!(
                            "phase {} of `{}` has no `epochs`",
                            i + 1,
                            self.what("curriculum")
                        ),
                        Some("give every phase its length, e.g. { epochs = 4, size = 16 }".into()),
                    ));
                };
                let int =
                    |v: &Spanned<i64>, key: &str, min: i64| self.r.int(v, &what(key), min, None);
                let scale = match &ph.get_ref().scale {
                    None => None,
                    Some(v) => Some(self.phase_scale(v, &what("scale"))?),
                };
                Ok(CurriculumPhase {
                    epochs: int(epochs, "epochs", 1)?,
                    size: ph
                        .get_ref()
                        .size
                        .as_ref()
                        .map(|v| int(v, "size", 1))
                        .transpose()?
                        .map(|s| s as usize),
                    scale,
                    batch_size: match &ph.get_ref().batch_size {
                        Some(v) => int(v, "batch_size", 1)? as usize,
                        None => batch_size,
                    },
                })
            })
            .collect()
    }

    /// A phase's crop `scale`: `[lo, hi]` with 0 < lo <= hi <= 1.
    fn phase_scale(&self, v: &Spanned<Vec<Spanned<f64>>>, what: &str) -> Result<[f64; 2]> {
        let help = Some(
            "e.g. scale = [0.35, 1.0]: the range of the crop's area as a fraction of the image's"
                .to_string(),
        );
        let [lo, hi] = v.get_ref().as_slice() else {
            return Err(self.err_at(
                v,
                format!(
                    "`{what}` must have exactly two numbers, found {}",
                    v.get_ref().len()
                ),
                help,
            ));
        };
        let (l, h) = (
            self.r.float(lo, what, FloatRule::Positive)?,
            self.r.float(hi, what, FloatRule::Positive)?,
        );
        if l > h || h > 1.0 {
            return Err(self.err_at(
                v,
                format!("`{what}` must be [lo, hi] with 0 < lo <= hi <= 1, found [{l}, {h}]"),
                help,
            ));
        }
        Ok([l, h])
    }

    /// With a curriculum the phases say how long training is: `epochs`, when also written,
    /// must be their sum.
    fn curriculum_epochs(&self, b: &RawPretrain, phases: &[CurriculumPhase]) -> Result<u64> {
        let sum: u64 = phases.iter().map(|p| p.epochs).sum();
        match &b.epochs {
            Some(v) if *v.get_ref() != sum as i64 => Err(self.err_at(
                v,
                format!(
                    "`{}` is {} but the phases of `{}` add up to {sum} epochs",
                    self.what("epochs"),
                    v.get_ref(),
                    self.what("curriculum")
                ),
                Some(format!("set epochs = {sum} or remove `epochs` (the curriculum's phases give the length)")),
            )),
            _ => Ok(sum),
        }
    }
}
