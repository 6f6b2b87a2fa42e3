//! The model pretraining trains: the encoder with its projector, predictor or decoder heads,
//! built from the stage's `model` table, and the objective and optimiser it is trained with.

use crate::engine::nn::JepaPredictor;
use crate::engine::nn::MlmHead;
use crate::engine::nn::{Encoder, EncoderSpec, Init, InputShape, MaeDecoder, Mlp, ParamStore};
use crate::engine::nn::{ParamKind, Pid};
use crate::engine::optim::OptimSpec;
use crate::engine::{Engine, Graph, Tensor};
use crate::pipeline::{OptimConfig, PretrainConfig};
use crate::plugins::{LatentPrediction, ObjectiveInstance, ObjectiveNeeds, ParamInit, Registry};
use crate::stages::StageError;

pub(super) fn optim_spec(o: &OptimConfig) -> OptimSpec {
    match o.optimizer {
        crate::pipeline::Optimizer::Lars { momentum, eta } => OptimSpec::Lars {
            momentum: momentum as f32,
            weight_decay: o.weight_decay as f32,
            eta: eta as f32,
        },
        crate::pipeline::Optimizer::Sgd { momentum } => OptimSpec::Sgd {
            momentum: momentum as f32,
            weight_decay: o.weight_decay as f32,
            nesterov: false,
        },
        crate::pipeline::Optimizer::AdamW { betas } => OptimSpec::AdamW {
            beta1: betas[0] as f32,
            beta2: betas[1] as f32,
            eps: 1e-8,
            weight_decay: o.weight_decay as f32,
        },
    }
}

pub(super) fn objective(
    cfg: &PretrainConfig,
    registry: &Registry,
) -> Result<ObjectiveInstance, StageError> {
    let name = &cfg.objective.plugin;
    let found = registry
        .objectives
        .get(name)
        .ok_or_else(|| StageError::Input(registry.not_found("objective", name)))?;
    let params = cfg
        .objective
        .params
        .as_object()
        .cloned()
        .unwrap_or_default();
    ObjectiveInstance::create(found, name, &params).map_err(|e| StageError::Input(e.to_string()))
}

/// Encoder plus the heads the objective asked for, all in one [`ParamStore`]: the encoder's
/// entries come first (`enc_len` of them), so the saved encoder is a prefix of the store.
pub(super) struct Model {
    pub(super) input: InputShape,
    pub(super) encoder: Encoder,
    pub(super) enc_len: usize,
    pub(super) projector: Option<Mlp>,
    pub(super) predictor: Option<Mlp>,
    pub(super) decoder: Option<Mlp>,
    /// Masked patch modelling: the mask ratio and the MAE decoder.
    pub(super) mae: Option<(f64, MaeDecoder)>,
    /// Prediction in latent space (I-JEPA): the masking and the predictor.
    pub(super) jepa: Option<(LatentPrediction, JepaPredictor)>,
    /// Masked token modelling: the prediction head over the vocabulary.
    pub(super) mlm: Option<MlmHead>,
    /// Every view's shape (the first is `input`; multi-crop views may be smaller).
    pub(super) view_shapes: Vec<(usize, usize, usize)>,
    /// The EMA teacher sees only the first this many views.
    pub(super) teacher_views: Option<usize>,
    /// The objective's own trainable tensors (declared name, place in the store), after
    /// every head.
    pub(super) objective_params: Vec<(String, Pid)>,
    /// Image–text pairs: the text tower, after everything else in the store.
    pub(super) text: Option<super::paired::Tower>,
}

/// The outputs of one forward pass over all views (rows: view-major).
pub(super) struct Outputs {
    pub(super) emb: Tensor,
    pub(super) proj: Option<Tensor>,
    pub(super) pred: Option<Tensor>,
    pub(super) dec: Option<Tensor>,
}

impl Model {
    /// The model for views of `view_shapes` (the first one is the encoder's input size).
    pub(super) fn new(
        e: &Engine,
        ps: &mut ParamStore,
        spec: &EncoderSpec,
        view_shapes: &[(usize, usize, usize)],
        needs: &ObjectiveNeeds,
        seed: u64,
    ) -> Result<Model, StageError> {
        let (channels, height, width) = view_shapes[0];
        let input = InputShape {
            channels,
            height,
            width,
        };
        let mut init = Init::new(seed);
        let encoder = Encoder::new(e, ps, &mut init, spec, input)?;
        let enc_len = ps.entries.len();
        let mlp = |ps: &mut ParamStore,
                   init: &mut Init,
                   name: &str,
                   inp: usize,
                   hidden: usize,
                   layers: usize,
                   out: usize| {
            let mut widths = vec![inp];
            widths.extend(std::iter::repeat_n(hidden, layers.saturating_sub(1)));
            widths.push(out);
            Mlp::new(e, ps, init, name, &widths, true)
        };
        let projector = needs
            .projector
            .map(|(h, o, l)| mlp(ps, &mut init, "projector", spec.embed_dim(), h, l, o));
        let proj_out = needs.projector.map_or(spec.embed_dim(), |p| p.1);
        let predictor = needs
            .predictor_hidden
            .map(|h| mlp(ps, &mut init, "predictor", proj_out, h, 2, proj_out));
        let decoder = needs.decoder.map(|(h, l)| {
            mlp(
                ps,
                &mut init,
                "decoder",
                spec.embed_dim(),
                h,
                l,
                input.len(),
            )
        });
        let mae = match (needs.mask_ratio, &encoder) {
            (None, _) => None,
            (Some(ratio), Encoder::Vit(vit)) => {
                Some((ratio, MaeDecoder::new(e, ps, &mut init, vit, input, 4)))
            }
            (Some(_), _) => {
                return Err(StageError::Input(
                    "masked patch modelling needs `model.arch = \"vit\"`".into(),
                ))
            }
        };
        let jepa = match (needs.latent, &encoder) {
            (None, _) => None,
            (Some(spec), Encoder::Vit(vit)) => {
                let (depth, width) = (spec.predictor_depth as usize, spec.predictor_dim as usize);
                Some((
                    spec,
                    JepaPredictor::new(e, ps, &mut init, vit, depth, width),
                ))
            }
            (Some(_), _) => {
                return Err(StageError::Input(
                    "prediction in latent space (I-JEPA) needs `model.arch = \"vit\"`".into(),
                ))
            }
        };
        let mlm =
            match (needs.masked_tokens, &encoder) {
                (false, _) => None,
                (true, Encoder::Text(t)) => {
                    Some(MlmHead::new(e, ps, &mut init, t.spec().dim, t.spec().vocab))
                }
                (true, _) => return Err(StageError::Input(
                    "masked token modelling needs `model.arch = \"transformer\"` on a text dataset"
                        .into(),
                )),
            };
        // Drawn after every head, so models without them keep their initial values.
        let objective_params = needs
            .params
            .iter()
            .map(|p| {
                let value = match p.init {
                    ParamInit::Normal(s) => init.normal(e, p.rows, p.cols, s as f32),
                    ParamInit::Uniform(b) => init.uniform(e, p.rows, p.cols, b as f32),
                    ParamInit::Constant(v) => e.full(v as f32, p.rows, p.cols),
                };
                let kind = match p.weight_decay {
                    true => ParamKind::Weight,
                    false => ParamKind::NoDecay,
                };
                let pid = ps.add(format!("objective.{}", p.name), value, kind);
                (p.name.clone(), pid)
            })
            .collect();
        Ok(Model {
            input,
            encoder,
            enc_len,
            projector,
            predictor,
            decoder,
            mae,
            jepa,
            mlm,
            view_shapes: view_shapes.to_vec(),
            teacher_views: needs.teacher_views,
            objective_params,
            text: None,
        })
    }

    /// The objective's trainable tensors by declared name: the student's from `ps`, and the
    /// EMA teacher's from `teacher` (empty without one).
    #[allow(clippy::type_complexity)]
    pub(super) fn objective_params(
        &self,
        ps: &ParamStore,
        teacher: Option<&ParamStore>,
    ) -> (Vec<(String, Tensor)>, Vec<(String, Tensor)>) {
        let of = |store: &ParamStore| -> Vec<(String, Tensor)> {
            self.objective_params
                .iter()
                .map(|(n, pid)| (n.clone(), store.get(*pid).clone()))
                .collect()
        };
        (of(ps), teacher.map(of).unwrap_or_default())
    }

    /// Forward through the encoder and heads. `full = false` stops after the projector (the
    /// EMA teacher needs no predictor or decoder).
    pub(super) fn forward(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        train: bool,
        full: bool,
    ) -> Result<Outputs, StageError> {
        self.forward_at(ps, g, x, self.input, train, full)
    }

    /// [`Self::forward`] on inputs of `shape` (a multi-crop view smaller than the model's
    /// input size).
    pub(super) fn forward_at(
        &self,
        ps: &mut ParamStore,
        g: &mut Graph,
        x: &Tensor,
        shape: InputShape,
        train: bool,
        full: bool,
    ) -> Result<Outputs, StageError> {
        let emb = self.encoder.forward(ps, g, x, shape, train)?;
        let proj = self
            .projector
            .as_ref()
            .map(|p| p.forward(ps, g, &emb, train))
            .transpose()?;
        let pred = match (&self.predictor, &proj, full) {
            (Some(p), Some(z), true) => Some(p.forward(ps, g, z, train)?),
            _ => None,
        };
        let dec = match (&self.decoder, full) {
            (Some(d), true) => Some(d.forward(ps, g, &emb, train)?),
            _ => None,
        };
        Ok(Outputs {
            emb,
            proj,
            pred,
            dec,
        })
    }

    pub(super) fn encoder_store(&self, ps: &ParamStore) -> ParamStore {
        ParamStore {
            entries: ps.entries[..self.enc_len].to_vec(),
            ..ParamStore::default()
        }
    }
}
