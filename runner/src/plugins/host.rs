//! The host side of plugin calls: log/error callbacks, parameter conversion, safe wrappers
//! around objective and augmentation instances, and the tensor-op table objectives build
//! their losses from (backed by the engine's [`Graph`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use pretext_plugin::abi::{
    self, Handle, PtxBuffer, PtxHost, PtxObjectiveInputs, PtxParam, PtxStr, PtxTensorOps,
};

pub use pretext_plugin::{LatentPrediction, ParamInit};

use super::loader::{Found, Library};
use crate::engine::graph::Axis2;
use crate::engine::{Engine, Graph, Tensor};

/// An error raised by (or while calling) a plugin; names the plugin and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{what} `{name}` (plugin library {library}): {message}")]
pub struct CallError {
    pub what: &'static str,
    pub name: String,
    pub library: String,
    pub message: String,
    pub panicked: bool,
}

/// How a non-finite loss is reported (pretraining recognises it to add a diagnosis).
pub const NON_FINITE_LOSS: &str = "returned a non-finite loss";

/// Per-call host context: which plugin is calling, and the error it reported.
struct HostCtx {
    plugin: String,
    error: RefCell<Option<String>>,
}

unsafe extern "C" fn host_log(ctx: *mut c_void, level: u32, msg: PtxStr) {
    let _ = crate::panic_guard::catch(|| {
        let ctx = &*(ctx as *const HostCtx);
        let msg = msg.as_str();
        let plugin = ctx.plugin.as_str();
        match level {
            abi::LOG_ERROR => tracing::error!(target: "pretext::plugin", plugin, "{msg}"),
            abi::LOG_WARN => tracing::warn!(target: "pretext::plugin", plugin, "{msg}"),
            abi::LOG_INFO => tracing::info!(target: "pretext::plugin", plugin, "{msg}"),
            abi::LOG_DEBUG => tracing::debug!(target: "pretext::plugin", plugin, "{msg}"),
            _ => tracing::trace!(target: "pretext::plugin", plugin, "{msg}"),
        }
    });
}

unsafe extern "C" fn host_set_error(ctx: *mut c_void, msg: PtxStr) {
    let _ = crate::panic_guard::catch(|| {
        let ctx = &*(ctx as *const HostCtx);
        *ctx.error.borrow_mut() = Some(msg.as_str().to_string());
    });
}

/// Calls one plugin function with a fresh host context and turns its status into a Result.
fn call(
    what: &'static str,
    name: &str,
    lib: &Library,
    extra_error: Option<String>,
    f: impl FnOnce(*const PtxHost) -> i32,
) -> Result<(), CallError> {
    let ctx = HostCtx {
        plugin: name.to_string(),
        error: RefCell::new(None),
    };
    let host = PtxHost {
        struct_size: std::mem::size_of::<PtxHost>() as u32,
        ctx: &ctx as *const HostCtx as *mut c_void,
        log: host_log,
        set_error: host_set_error,
    };
    let code = {
        let _in_call = super::watch::enter(what, name, &lib.path);
        f(&host)
    };
    if code == abi::PTX_OK {
        return Ok(());
    }
    let message = ctx
        .error
        .borrow_mut()
        .take()
        .or(extra_error)
        .unwrap_or_else(|| format!("failed with status {code} and no message"));
    Err(CallError {
        what,
        name: name.to_string(),
        library: lib.path.display().to_string(),
        message,
        panicked: code == abi::PTX_PANIC,
    })
}

/// Plugin parameters from the pipeline file (a JSON object of scalars and number lists).
pub struct RawParams {
    keys: Vec<String>,
    strs: Vec<String>,
    lists: Vec<Vec<f64>>,
    params: Vec<PtxParam>,
}

impl RawParams {
    /// Convert; nested tables and non-number lists are errors naming the key.
    pub fn from_json(
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<RawParams, String> {
        let mut rp = RawParams {
            keys: Vec::new(),
            strs: Vec::new(),
            lists: Vec::new(),
            params: Vec::new(),
        };
        let mut kinds = Vec::new();
        for (k, v) in map {
            use serde_json::Value as J;
            let kind = match v {
                J::Bool(b) => (abi::PARAM_BOOL, *b as u8, 0, 0.0, None, None),
                J::Number(n) if n.is_i64() => (abi::PARAM_INT, 0, n.as_i64().unwrap_or(0), 0.0, None, None),
                J::Number(n) => (abi::PARAM_FLOAT, 0, 0, n.as_f64().unwrap_or(f64::NAN), None, None),
                J::String(s) => (abi::PARAM_STR, 0, 0, 0.0, Some(s.clone()), None),
                J::Array(a) => {
                    let nums: Option<Vec<f64>> = a.iter().map(|x| x.as_f64()).collect();
                    let nums = nums.ok_or_else(|| format!("parameter `{k}` must be a number, string, boolean or list of numbers"))?;
                    (abi::PARAM_FLOAT_LIST, 0, 0, 0.0, None, Some(nums))
                }
                _ => return Err(format!("parameter `{k}` must be a number, string, boolean or list of numbers (tables are not allowed)")),
            };
            rp.keys.push(k.clone());
            kinds.push(kind);
        }
        // Build the C structs after all owned buffers are in place (no reallocation later).
        for (kind, _) in kinds.iter().zip(0..) {
            if let Some(s) = &kind.4 {
                rp.strs.push(s.clone());
            }
            if let Some(l) = &kind.5 {
                rp.lists.push(l.clone());
            }
        }
        let (mut si, mut li) = (0, 0);
        for (i, kind) in kinds.iter().enumerate() {
            let mut p = PtxParam {
                key: PtxStr::borrowed(&rp.keys[i]),
                kind: kind.0,
                b: kind.1,
                i: kind.2,
                f: kind.3,
                s: PtxStr {
                    ptr: std::ptr::null(),
                    len: 0,
                },
                list: std::ptr::null(),
                list_len: 0,
            };
            if kind.4.is_some() {
                p.s = PtxStr::borrowed(&rp.strs[si]);
                si += 1;
            }
            if kind.5.is_some() {
                p.list = rp.lists[li].as_ptr();
                p.list_len = rp.lists[li].len();
                li += 1;
            }
            rp.params.push(p);
        }
        Ok(rp)
    }
}

/// A trainable tensor an objective owns, in host terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveParam {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub init: ParamInit,
    pub weight_decay: bool,
}

/// What an objective needs, in host terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveNeeds {
    pub views: usize,
    pub projector: Option<(usize, usize, usize)>,
    pub predictor_hidden: Option<usize>,
    pub ema_teacher: Option<(f64, f64)>,
    pub uses_state: bool,
    pub decoder: Option<(usize, usize)>,
    pub mask_ratio: Option<f64>,
    /// Masked token modelling: logits at flagged positions.
    pub masked_tokens: bool,
    /// The views differ only through dropout: the model must have some.
    pub needs_dropout: bool,
    /// Multi-crop: the EMA teacher sees only the first this many views.
    pub teacher_views: Option<usize>,
    /// `views` is a minimum: more views (local crops) are welcome.
    pub more_views: bool,
    /// Trainable tensors the objective owns.
    pub params: Vec<ObjectiveParam>,
    /// Prediction in latent space (I-JEPA): target-block masking and a predictor.
    pub latent: Option<LatentPrediction>,
    /// Image–text pairs: a text tower over each sample's caption, its embeddings after the
    /// image views'.
    pub paired_text: bool,
}

impl ObjectiveNeeds {
    /// Whether `declared` views (from the augment stage) suit this objective.
    pub fn accepts_views(&self, declared: usize) -> bool {
        declared == self.views || (self.more_views && declared > self.views)
    }

    /// "2 views" or "at least 2 views", for messages.
    pub fn views_wanted(&self) -> String {
        let s = if self.views == 1 { "" } else { "s" };
        match self.more_views {
            true => format!("at least {} view{s}", self.views),
            false => format!("{} view{s}", self.views),
        }
    }
}

/// A live objective instance (destroyed on drop, by the plugin that made it).
pub struct ObjectiveInstance {
    found: Found<abi::PtxObjectiveEntry>,
    name: String,
    inst: *mut c_void,
}

impl Drop for ObjectiveInstance {
    fn drop(&mut self) {
        unsafe { (self.found.entry.destroy)(self.inst) };
    }
}

/// The tensors of one step, per view.
pub struct StepInputs<'a> {
    pub embeddings: &'a [Tensor],
    pub projections: Option<&'a [Tensor]>,
    pub predictions: Option<&'a [Tensor]>,
    pub targets: Option<&'a [Tensor]>,
    pub view_inputs: Option<&'a [Tensor]>,
    pub originals: Option<&'a Tensor>,
    pub decoded: Option<&'a [Tensor]>,
    /// Masked patch modelling: (predicted patches, true patches, mask).
    pub masked_patches: Option<(&'a Tensor, &'a Tensor, &'a Tensor)>,
    /// Masked token modelling: (logits at flagged positions, original ids there `(n, 1)`).
    pub masked_tokens: Option<(&'a Tensor, &'a Tensor)>,
    /// Prediction in latent space: (predictor outputs, teacher outputs) at the target patches.
    pub latent: Option<(&'a Tensor, &'a Tensor)>,
    pub epoch: u32,
    pub step: u64,
    pub total_steps: u64,
    /// Epochs of the whole run.
    pub epochs: u32,
    /// The objective's trainable tensors, by declared name: the student's (on the step's
    /// graph) and the EMA teacher's (constants), when there is a teacher.
    pub params: &'a [(String, Tensor)],
    pub teacher_params: &'a [(String, Tensor)],
}

impl<'a> StepInputs<'a> {
    /// Only the embeddings, at the first step of a one-step, one-epoch run: the start of a
    /// literal that fills in what its objective reads (`StepInputs { latent: …, ..bare(&e) }`).
    pub fn bare(embeddings: &'a [Tensor]) -> Self {
        StepInputs {
            embeddings,
            projections: None,
            predictions: None,
            targets: None,
            view_inputs: None,
            originals: None,
            decoded: None,
            masked_patches: None,
            masked_tokens: None,
            latent: None,
            epoch: 0,
            step: 0,
            total_steps: 1,
            epochs: 1,
            params: &[],
            teacher_params: &[],
        }
    }
}

/// The loss and the scalars the objective reported, still on the device: the step reads
/// them together with the gradient norm in one transfer ([`Engine::read_scalars`]).
pub struct StepOutput {
    pub loss: Tensor,
    pub reports: Vec<(String, Tensor)>,
}

/// Convert parameters and call a plugin's `create`; returns the new instance pointer.
fn create_raw(
    what: &'static str,
    name: &str,
    lib: &Library,
    params: &serde_json::Map<String, serde_json::Value>,
    create: unsafe extern "C" fn(*const PtxHost, *const PtxParam, usize, *mut *mut c_void) -> i32,
) -> Result<*mut c_void, CallError> {
    let raw = RawParams::from_json(params).map_err(|m| CallError {
        what,
        name: name.into(),
        library: lib.path.display().to_string(),
        message: m,
        panicked: false,
    })?;
    let mut inst: *mut c_void = std::ptr::null_mut();
    call(what, name, lib, None, |host| unsafe {
        create(host, raw.params.as_ptr(), raw.params.len(), &mut inst)
    })?;
    Ok(inst)
}

impl ObjectiveInstance {
    pub fn create(
        found: &Found<abi::PtxObjectiveEntry>,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<ObjectiveInstance, CallError> {
        let inst = create_raw(
            "objective",
            name,
            &found.library,
            params,
            found.entry.create,
        )?;
        Ok(ObjectiveInstance {
            found: found.clone(),
            name: name.to_string(),
            inst,
        })
    }

    pub fn library(&self) -> &Arc<Library> {
        &self.found.library
    }

    /// The error for a loss value `v` that is not finite (read after the step; `epoch` is
    /// 0-based, as plugins see it; messages count epochs from 1).
    pub fn non_finite_loss(&self, v: f64, epoch: u32, step: u64) -> CallError {
        self.err(format!(
            "{NON_FINITE_LOSS} ({v}) at epoch {} step {step}",
            epoch + 1
        ))
    }

    fn err(&self, message: String) -> CallError {
        CallError {
            what: "objective",
            name: self.name.clone(),
            library: self.found.library.path.display().to_string(),
            message,
            panicked: false,
        }
    }

    pub fn needs(&self) -> Result<ObjectiveNeeds, CallError> {
        let mut raw = abi::PtxObjectiveNeeds {
            struct_size: std::mem::size_of::<abi::PtxObjectiveNeeds>() as u32,
            ..Default::default()
        };
        call(
            "objective",
            &self.name,
            &self.found.library,
            None,
            |host| unsafe { (self.found.entry.needs)(self.inst, host, &mut raw) },
        )?;
        if raw.views == 0 || raw.views > 16 {
            return Err(self.err(format!(
                "asks for {} views; it must be between 1 and 16",
                raw.views
            )));
        }
        let projector = (raw.projector_out > 0).then_some((
            raw.projector_hidden as usize,
            raw.projector_out as usize,
            raw.projector_layers.max(1) as usize,
        ));
        Ok(ObjectiveNeeds {
            views: raw.views as usize,
            projector,
            predictor_hidden: (raw.predictor_hidden > 0).then_some(raw.predictor_hidden as usize),
            ema_teacher: (raw.ema_teacher != 0)
                .then_some((raw.ema_momentum_start, raw.ema_momentum_end)),
            uses_state: raw.uses_state != 0,
            decoder: (raw.decoder_hidden > 0).then_some((
                raw.decoder_hidden as usize,
                raw.decoder_layers.max(1) as usize,
            )),
            mask_ratio: (raw.mask_ratio > 0.0).then_some(raw.mask_ratio),
            masked_tokens: raw.masked_tokens != 0,
            needs_dropout: raw.needs_dropout != 0,
            teacher_views: (raw.teacher_views > 0).then_some(raw.teacher_views as usize),
            more_views: raw.more_views != 0,
            params: self.param_decls(raw.n_params)?,
            latent: self.latent_spec(&raw)?,
            paired_text: raw.paired_text != 0,
        })
        .and_then(|n| self.check_needs(n))
    }

    /// Read the `n` trainable tensors the objective declares.
    fn param_decls(&self, n: u32) -> Result<Vec<ObjectiveParam>, CallError> {
        if n > 64 {
            return Err(self.err(format!(
                "declares {n} trainable tensors; at most 64 are supported"
            )));
        }
        let mut out: Vec<ObjectiveParam> = Vec::new();
        for i in 0..n {
            let mut d = abi::PtxParamDecl {
                struct_size: std::mem::size_of::<abi::PtxParamDecl>() as u32,
                name: PtxStr::borrowed(""),
                rows: 0,
                cols: 0,
                init: abi::INIT_CONSTANT,
                scale: 0.0,
                weight_decay: 0,
            };
            call(
                "objective",
                &self.name,
                &self.found.library,
                None,
                |host| unsafe { (self.found.entry.param_decl)(self.inst, host, i, &mut d) },
            )?;
            // SAFETY: the ABI says names point to 'static plugin data.
            let name = unsafe { d.name.as_str() }.to_string();
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !ok_name {
                return Err(self.err(format!(
                    "trainable tensor {i} has the name {name:?}; use letters, digits, `_` and `.`"
                )));
            }
            if out.iter().any(|p| p.name == name) {
                return Err(self.err(format!("declares the trainable tensor `{name}` twice")));
            }
            let (rows, cols) = (d.rows as usize, d.cols as usize);
            if rows == 0 || cols == 0 || rows * cols > 1 << 26 {
                return Err(self.err(format!(
                    "trainable tensor `{name}` has shape {rows}x{cols}; each side must be at least 1 and the whole at most 2^26 values"
                )));
            }
            let Some(init) = ParamInit::from_raw(d.init, d.scale) else {
                return Err(self.err(format!(
                    "trainable tensor `{name}` has init kind {}; use INIT_NORMAL, INIT_UNIFORM or INIT_CONSTANT",
                    d.init
                )));
            };
            if !d.scale.is_finite() {
                return Err(self.err(format!(
                    "trainable tensor `{name}` has a non-finite init scale"
                )));
            }
            out.push(ObjectiveParam {
                name,
                rows,
                cols,
                init,
                weight_decay: d.weight_decay != 0,
            });
        }
        Ok(out)
    }

    /// Read and check the latent-prediction request (I-JEPA) of `raw`.
    fn latent_spec(
        &self,
        raw: &abi::PtxObjectiveNeeds,
    ) -> Result<Option<LatentPrediction>, CallError> {
        if raw.latent_blocks == 0 {
            return Ok(None);
        }
        let pair = |p: [f64; 2]| (p[0], p[1]);
        let spec = LatentPrediction {
            blocks: raw.latent_blocks,
            target_scale: pair(raw.latent_target_scale),
            target_aspect: pair(raw.latent_target_aspect),
            context_scale: pair(raw.latent_context_scale),
            predictor_depth: raw.latent_predictor_depth,
            predictor_dim: raw.latent_predictor_dim,
        };
        if spec.blocks > 16 {
            return Err(self.err(format!(
                "asks for {} target blocks; at most 16",
                spec.blocks
            )));
        }
        let fraction = |(lo, hi): (f64, f64)| lo > 0.0 && lo <= hi && hi <= 1.0;
        for (what, range) in [
            ("target block scale", spec.target_scale),
            ("context block scale", spec.context_scale),
        ] {
            if !fraction(range) {
                return Err(self.err(format!(
                    "asks for a {what} of {range:?}; it must be a range low <= high within (0, 1]"
                )));
            }
        }
        let (lo, hi) = spec.target_aspect;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return Err(self.err(format!(
                "asks for a target block aspect of {:?}; it must be a range 0 < low <= high",
                spec.target_aspect
            )));
        }
        if !(1..=12).contains(&spec.predictor_depth) || !(1..=4096).contains(&spec.predictor_dim) {
            return Err(self.err(format!(
                "asks for a predictor of {} blocks of width {}; depth must be 1 to 12 and width 1 to 4096",
                spec.predictor_depth, spec.predictor_dim
            )));
        }
        Ok(Some(spec))
    }

    fn check_needs(&self, n: ObjectiveNeeds) -> Result<ObjectiveNeeds, CallError> {
        if n.latent.is_some() {
            if n.ema_teacher.is_none() {
                return Err(self.err(
                    "asks for latent prediction but declares no EMA teacher to predict".into(),
                ));
            }
            if n.views != 1 || n.more_views || n.mask_ratio.is_some() {
                return Err(self.err(
                    "asks for latent prediction, which masks one view: it must need exactly 1 view and no mask_ratio".into(),
                ));
            }
        }
        if n.paired_text
            && (n.views != 1 || n.more_views || n.latent.is_some() || n.mask_ratio.is_some())
        {
            return Err(self.err(
                "asks for image–text pairs, which contrast one image view with its caption: it must need exactly 1 view, without masking".into(),
            ));
        }
        if let Some(k) = n.teacher_views {
            if n.ema_teacher.is_none() {
                return Err(self.err(format!(
                    "asks for a teacher on {k} views but declares no EMA teacher"
                )));
            }
            if k > n.views {
                return Err(self.err(format!(
                    "asks for a teacher on {k} views but needs only {}",
                    n.views
                )));
            }
        }
        Ok(n)
    }

    /// Run the objective's loss on `graph`. `state` persists across steps.
    pub fn loss(
        &mut self,
        engine: &Engine,
        graph: &mut Graph,
        inputs: &StepInputs,
        state: &mut HashMap<String, Tensor>,
    ) -> Result<StepOutput, CallError> {
        let mut ctx = OpsCtx {
            engine,
            graph,
            handles: Vec::new(),
            error: None,
            reports: Vec::new(),
            state,
            params: inputs.params,
            teacher_params: inputs.teacher_params,
        };
        let mut reg =
            |ts: &[Tensor]| -> Vec<Handle> { ts.iter().map(|t| ctx.put(t.clone())).collect() };
        let emb = reg(inputs.embeddings);
        let proj = inputs.projections.map(&mut reg);
        let pred = inputs.predictions.map(&mut reg);
        let targ = inputs.targets.map(&mut reg);
        let view_in = inputs.view_inputs.map(&mut reg);
        let dec = inputs.decoded.map(&mut reg);
        let orig = inputs
            .originals
            .map_or(0, |t| reg(std::slice::from_ref(t))[0]);
        let masked = inputs
            .masked_patches
            .map(|(p, t, m)| reg(&[p.clone(), t.clone(), m.clone()]));
        let patch = |i: usize| masked.as_ref().map_or(0, |h| h[i]);
        let tokens = inputs
            .masked_tokens
            .map(|(l, t)| reg(&[l.clone(), t.clone()]));
        let token = |i: usize| tokens.as_ref().map_or(0, |h| h[i]);
        let latent = inputs.latent.map(|(p, t)| reg(&[p.clone(), t.clone()]));
        let lat = |i: usize| latent.as_ref().map_or(0, |h| h[i]);
        let ptr = |v: &Option<Vec<Handle>>| v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        let raw_inputs = PtxObjectiveInputs {
            struct_size: std::mem::size_of::<PtxObjectiveInputs>() as u32,
            n_views: emb.len() as u32,
            embeddings: emb.as_ptr(),
            projections: ptr(&proj),
            predictions: ptr(&pred),
            targets: ptr(&targ),
            batch_size: inputs.embeddings.first().map_or(0, |t| t.shape().0 as u32),
            epoch: inputs.epoch,
            step: inputs.step,
            total_steps: inputs.total_steps,
            view_inputs: ptr(&view_in),
            originals: orig,
            decoded: ptr(&dec),
            patch_predictions: patch(0),
            patch_targets: patch(1),
            patch_mask: patch(2),
            token_logits: token(0),
            token_targets: token(1),
            n_targets: targ.as_ref().map_or(0, |t| t.len() as u32),
            epochs: inputs.epochs,
            latent_predictions: lat(0),
            latent_targets: lat(1),
        };
        let mut out: Handle = 0;
        let table = ops_table(&mut ctx);
        let entry = self.found.entry;
        let inst = self.inst;
        let res = call(
            "objective",
            &self.name,
            &self.found.library,
            None,
            |host| unsafe { (entry.loss)(inst, host, &table, &raw_inputs, &mut out) },
        );
        if let Err(mut e) = res {
            // A failed host op explains itself better than the plugin's generic error.
            if let Some(op_err) = ctx.error.take() {
                if !e.panicked {
                    e.message = op_err;
                }
            }
            return Err(e);
        }
        let loss = ctx
            .get(out)
            .map_err(|m| self.err(format!("returned an invalid loss handle: {m}")))?;
        if loss.shape() != (1, 1) {
            return Err(self.err(format!(
                "returned a loss of shape {:?}; a loss must be a scalar (1x1)",
                loss.shape()
            )));
        }
        Ok(StepOutput {
            loss,
            reports: std::mem::take(&mut ctx.reports),
        })
    }
}

// ----------------------------------------------------------------------------- ops table

struct OpsCtx<'a> {
    engine: &'a Engine,
    graph: &'a mut Graph,
    handles: Vec<Tensor>,
    error: Option<String>,
    reports: Vec<(String, Tensor)>,
    state: &'a mut HashMap<String, Tensor>,
    params: &'a [(String, Tensor)],
    teacher_params: &'a [(String, Tensor)],
}

impl OpsCtx<'_> {
    fn put(&mut self, t: Tensor) -> Handle {
        self.handles.push(t);
        self.handles.len() as Handle
    }
    fn get(&self, h: Handle) -> Result<Tensor, String> {
        if h == 0 || h as usize > self.handles.len() {
            return Err(format!("unknown tensor handle {h}"));
        }
        Ok(self.handles[h as usize - 1].clone())
    }
}

/// Run one op: resolve handles, catch errors and panics, store the result.
unsafe fn op(
    ctx: *mut c_void,
    name: &str,
    f: impl FnOnce(&mut OpsCtx) -> Result<Tensor, String>,
) -> Handle {
    let ctx = &mut *(ctx as *mut OpsCtx);
    match crate::panic_guard::catch(|| f(ctx)) {
        Ok(Ok(t)) => ctx.put(t),
        Ok(Err(m)) => {
            ctx.error
                .get_or_insert_with(|| format!("tensor op `{name}` failed: {m}"));
            0
        }
        Err(m) => {
            ctx.error
                .get_or_insert_with(|| format!("tensor op `{name}` failed inside the engine: {m}"));
            0
        }
    }
}

fn axis(a: i32) -> Result<Axis2, String> {
    Axis2::from_raw(a).ok_or_else(|| format!("axis {a} is not 0, 1 or -1"))
}

unsafe extern "C" fn op_unary(ctx: *mut c_void, code: u32, a: Handle) -> Handle {
    op(ctx, "unary", |c| {
        let a = c.get(a)?;
        let g = &mut *c.graph;
        let r = match code {
            abi::UN_NEG => g.neg(&a),
            abi::UN_EXP => g.exp(&a),
            abi::UN_LOG => g.ln(&a),
            abi::UN_SQRT => g.sqrt(&a),
            abi::UN_ABS => g.abs(&a),
            abi::UN_RELU => g.relu(&a),
            abi::UN_SQUARE => g.square(&a),
            abi::UN_DETACH => g.detach(&a),
            abi::UN_TRANSPOSE => g.transpose(&a),
            abi::UN_DIAG => g.diag(&a),
            _ => {
                return Err(format!(
                    "unary op code {code} is not supported by this host"
                ))
            }
        };
        r.map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_binary(ctx: *mut c_void, code: u32, a: Handle, b: Handle) -> Handle {
    op(ctx, "binary", |c| {
        let same = a == b;
        let (a, b) = (c.get(a)?, c.get(b)?);
        let g = &mut *c.graph;
        // dfdx cannot take the gradient of an op whose two operands are one tensor: give the
        // second operand its own identity through a recorded copy.
        let b = if same {
            g.mul_scalar(&b, 1.0).map_err(|e| e.to_string())?
        } else {
            b
        };
        let r = match code {
            abi::BIN_ADD => g.add(&a, &b),
            abi::BIN_SUB => g.sub(&a, &b),
            abi::BIN_MUL => g.mul(&a, &b),
            abi::BIN_DIV => g.div(&a, &b),
            abi::BIN_MATMUL => g.matmul(&a, &b),
            _ => {
                return Err(format!(
                    "binary op code {code} is not supported by this host"
                ))
            }
        };
        r.map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_scalar(ctx: *mut c_void, code: u32, a: Handle, s: f64) -> Handle {
    op(ctx, "scalar", |c| {
        let a = c.get(a)?;
        let g = &mut *c.graph;
        let s = s as f32;
        let r = match code {
            abi::SC_ADD => g.add_scalar(&a, s),
            abi::SC_MUL => g.mul_scalar(&a, s),
            abi::SC_POW => g.powf(&a, s),
            abi::SC_CLAMP_MIN => g.clamp(&a, s, f32::MAX),
            abi::SC_CLAMP_MAX => g.clamp(&a, f32::MIN, s),
            _ => {
                return Err(format!(
                    "scalar op code {code} is not supported by this host"
                ))
            }
        };
        r.map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_reduce(ctx: *mut c_void, code: u32, a: Handle, ax: i32) -> Handle {
    op(ctx, "reduce", |c| {
        let a = c.get(a)?;
        let ax = axis(ax)?;
        let g = &mut *c.graph;
        let r = match code {
            abi::RED_SUM => g.sum(&a, ax),
            abi::RED_MEAN => g.mean(&a, ax),
            abi::RED_LOGSUMEXP => g.logsumexp(&a, ax),
            abi::RED_MAX => g.max(&a, ax),
            _ => {
                return Err(format!(
                    "reduce op code {code} is not supported by this host"
                ))
            }
        };
        r.map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_axis(
    ctx: *mut c_void,
    code: u32,
    a: Handle,
    ax: i32,
    param: f64,
) -> Handle {
    op(ctx, "axis_op", |c| {
        let a = c.get(a)?;
        let ax = axis(ax)?;
        let g = &mut *c.graph;
        let r = match code {
            abi::AX_SOFTMAX => g.softmax(&a, ax),
            abi::AX_LOG_SOFTMAX => g.log_softmax(&a, ax),
            abi::AX_L2_NORMALIZE => g.l2_normalize(&a, ax, param.max(1e-12) as f32),
            _ => return Err(format!("axis op code {code} is not supported by this host")),
        };
        r.map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_slice(
    ctx: *mut c_void,
    a: Handle,
    ax: i32,
    start: usize,
    end: usize,
) -> Handle {
    op(ctx, "slice", |c| {
        let a = c.get(a)?;
        c.graph
            .slice(&a, axis(ax)?, start, end)
            .map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_concat(ctx: *mut c_void, a: Handle, b: Handle, ax: i32) -> Handle {
    op(ctx, "concat", |c| {
        let same = a == b;
        let (a, b) = (c.get(a)?, c.get(b)?);
        let b = if same {
            c.graph.mul_scalar(&b, 1.0).map_err(|e| e.to_string())?
        } else {
            b
        };
        c.graph.concat(&a, &b, axis(ax)?).map_err(|e| e.to_string())
    })
}

/// The `n` labels a plugin passed (a null pointer only with `n == 0`).
///
/// # Safety
/// `labels` must point at `n` readable `u32`s for the duration of the op (the ABI's contract).
unsafe fn label_slice<'a>(labels: *const u32, n: usize) -> Result<&'a [u32], String> {
    if n == 0 {
        return Ok(&[]);
    }
    if labels.is_null() {
        return Err("null labels".into());
    }
    Ok(std::slice::from_raw_parts(labels, n))
}

unsafe extern "C" fn op_cross_entropy(
    ctx: *mut c_void,
    logits: Handle,
    labels: *const u32,
    n: usize,
) -> Handle {
    op(ctx, "cross_entropy", |c| {
        let l = c.get(logits)?;
        c.graph
            .cross_entropy(&l, label_slice(labels, n)?)
            .map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_accuracy(
    ctx: *mut c_void,
    logits: Handle,
    labels: *const u32,
    n: usize,
) -> Handle {
    op(ctx, "accuracy", |c| {
        let l = c.get(logits)?;
        c.graph
            .accuracy(&l, label_slice(labels, n)?)
            .map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_constant(
    ctx: *mut c_void,
    data: *const f32,
    rows: usize,
    cols: usize,
) -> Handle {
    op(ctx, "constant", |c| {
        if data.is_null() || rows.checked_mul(cols).is_none() || rows * cols > 1 << 28 {
            return Err(format!("invalid constant {rows}x{cols}"));
        }
        let v = std::slice::from_raw_parts(data, rows * cols).to_vec();
        c.engine.tensor(v, rows, cols).map_err(|e| e.to_string())
    })
}

unsafe extern "C" fn op_full(ctx: *mut c_void, value: f64, rows: usize, cols: usize) -> Handle {
    op(ctx, "full", |c| {
        if rows == 0 || cols == 0 || rows.saturating_mul(cols) > 1 << 28 {
            return Err(format!("invalid shape {rows}x{cols}"));
        }
        Ok(c.engine.full(value as f32, rows, cols))
    })
}

unsafe extern "C" fn op_eye(ctx: *mut c_void, n: usize) -> Handle {
    op(ctx, "eye", |c| {
        if n == 0 || n > 1 << 14 {
            return Err(format!("invalid size {n}"));
        }
        Ok(c.engine.eye(n))
    })
}

unsafe extern "C" fn op_shape(
    ctx: *mut c_void,
    a: Handle,
    rows: *mut usize,
    cols: *mut usize,
) -> i32 {
    let c = &mut *(ctx as *mut OpsCtx);
    match c.get(a) {
        Ok(t) if !rows.is_null() && !cols.is_null() => {
            let (r, cc) = t.shape();
            *rows = r;
            *cols = cc;
            abi::PTX_OK
        }
        Ok(_) => abi::PTX_ERROR,
        Err(m) => {
            c.error.get_or_insert(m);
            abi::PTX_ERROR
        }
    }
}

unsafe extern "C" fn op_read(ctx: *mut c_void, a: Handle, out: *mut f32, len: usize) -> i32 {
    let c = &mut *(ctx as *mut OpsCtx);
    match c.get(a) {
        Ok(t) if t.len() == len && !out.is_null() => {
            std::ptr::copy_nonoverlapping(t.to_vec().as_ptr(), out, len);
            abi::PTX_OK
        }
        Ok(t) => {
            c.error.get_or_insert(format!(
                "read: buffer of {len} values for a tensor of {}",
                t.len()
            ));
            abi::PTX_ERROR
        }
        Err(m) => {
            c.error.get_or_insert(m);
            abi::PTX_ERROR
        }
    }
}

unsafe extern "C" fn op_report(ctx: *mut c_void, name: PtxStr, a: Handle) -> i32 {
    let c = &mut *(ctx as *mut OpsCtx);
    match c.get(a) {
        Ok(t) if t.shape() == (1, 1) => {
            c.reports.push((name.as_str().to_string(), t.detached()));
            abi::PTX_OK
        }
        _ => {
            c.error
                .get_or_insert(format!("report `{}`: not a scalar tensor", name.as_str()));
            abi::PTX_ERROR
        }
    }
}

unsafe extern "C" fn op_state_get(ctx: *mut c_void, key: PtxStr) -> Handle {
    let c = &mut *(ctx as *mut OpsCtx);
    // A fresh copy per call: two handles never share one tensor identity.
    match c.state.get(key.as_str()).map(|t| t.detached()) {
        Some(t) => c.put(t),
        None => 0,
    }
}

unsafe extern "C" fn op_state_set(ctx: *mut c_void, key: PtxStr, a: Handle) -> i32 {
    let c = &mut *(ctx as *mut OpsCtx);
    match c.get(a) {
        Ok(t) => {
            c.state.insert(key.as_str().to_string(), t.detached());
            abi::PTX_OK
        }
        Err(m) => {
            c.error.get_or_insert(m);
            abi::PTX_ERROR
        }
    }
}

unsafe extern "C" fn op_param(ctx: *mut c_void, name: PtxStr, teacher: u32) -> Handle {
    let key = name.as_str();
    op(ctx, "param", |c| {
        let (list, whose) = match teacher {
            0 => (c.params, "the student"),
            _ => (c.teacher_params, "the EMA teacher"),
        };
        match list.iter().find(|(n, _)| n == key) {
            Some((_, t)) if teacher == 0 => Ok(t.clone()),
            Some((_, t)) => Ok(t.clone().as_input()),
            None if teacher != 0 && c.teacher_params.is_empty() && !c.params.is_empty() => Err(
                "there is no EMA teacher: declare `ema_teacher` in needs() to read teacher_param"
                    .into(),
            ),
            None => Err(format!(
                "{whose} has no trainable tensor `{key}`: declare it in parameters()"
            )),
        }
    })
}

unsafe extern "C" fn op_release(_ctx: *mut c_void, _a: Handle) {
    // Handles are freed at the end of the step; early release is an optimisation we skip.
}

fn ops_table(ctx: &mut OpsCtx) -> PtxTensorOps {
    PtxTensorOps {
        struct_size: std::mem::size_of::<PtxTensorOps>() as u32,
        ctx: ctx as *mut OpsCtx as *mut c_void,
        unary: op_unary,
        binary: op_binary,
        scalar: op_scalar,
        reduce: op_reduce,
        axis_op: op_axis,
        slice: op_slice,
        concat: op_concat,
        cross_entropy: op_cross_entropy,
        constant: op_constant,
        full: op_full,
        eye: op_eye,
        shape: op_shape,
        read: op_read,
        report: op_report,
        state_get: op_state_get,
        state_set: op_state_set,
        release: op_release,
        accuracy: op_accuracy,
        param: op_param,
    }
}

// ---------------------------------------------------------------------------- augmentations

/// A live augmentation instance. `apply` may run on several threads at once (ABI contract).
pub struct AugmentInstance {
    found: Found<abi::PtxAugmentEntry>,
    pub name: String,
    inst: *mut c_void,
}

// SAFETY: the ABI requires `apply`/`output_shape` to be callable concurrently on one instance.
unsafe impl Send for AugmentInstance {}
unsafe impl Sync for AugmentInstance {}

impl Drop for AugmentInstance {
    fn drop(&mut self) {
        unsafe { (self.found.entry.destroy)(self.inst) };
    }
}

fn image_buffer(shape: (usize, usize, usize), data: *mut f32) -> PtxBuffer {
    PtxBuffer {
        dtype: abi::DTYPE_F32,
        rank: 3,
        shape: [shape.0 as u32, shape.1 as u32, shape.2 as u32, 0],
        data: data as *mut c_void,
    }
}

impl AugmentInstance {
    pub fn create(
        found: &Found<abi::PtxAugmentEntry>,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<AugmentInstance, CallError> {
        let inst = create_raw(
            "augmentation",
            name,
            &found.library,
            params,
            found.entry.create,
        )?;
        Ok(AugmentInstance {
            found: found.clone(),
            name: name.to_string(),
            inst,
        })
    }

    pub fn library(&self) -> &Arc<Library> {
        &self.found.library
    }

    /// Output `(c, h, w)` for an input `(c, h, w)`.
    pub fn output_shape(
        &self,
        input: (usize, usize, usize),
    ) -> Result<(usize, usize, usize), CallError> {
        let inb = image_buffer(input, std::ptr::null_mut());
        let mut out = image_buffer((0, 0, 0), std::ptr::null_mut());
        call(
            "augmentation",
            &self.name,
            &self.found.library,
            None,
            |host| unsafe { (self.found.entry.output_shape)(self.inst, host, &inb, &mut out) },
        )?;
        let s = (
            out.shape[0] as usize,
            out.shape[1] as usize,
            out.shape[2] as usize,
        );
        if out.rank != 3 || s.0 == 0 || s.1 == 0 || s.2 == 0 || s.0 * s.1 * s.2 > 1 << 26 {
            return Err(CallError {
                what: "augmentation",
                name: self.name.clone(),
                library: self.found.library.path.display().to_string(),
                message: format!(
                    "declared an invalid output shape {:?} (rank {})",
                    out.shape, out.rank
                ),
                panicked: false,
            });
        }
        Ok(s)
    }

    /// `true` for a token augmentation (text), `false` for an image augmentation.
    pub fn is_tokens(&self) -> bool {
        self.found.entry.modality == abi::MODALITY_TOKENS
    }

    /// Transform one token sequence of ids from a vocabulary of `vocab`; `output` has the
    /// input's length. Output ids may carry the `TARGET` flag (bit 31).
    pub fn apply_tokens(
        &self,
        seed: u64,
        input: &[u32],
        vocab: usize,
        output: &mut [u32],
    ) -> Result<(), CallError> {
        let buffer = |data: *mut u32, len: usize| PtxBuffer {
            dtype: abi::DTYPE_U32,
            rank: 2,
            shape: [len as u32, vocab as u32, 0, 0],
            data: data as *mut c_void,
        };
        let inb = buffer(input.as_ptr() as *mut u32, input.len());
        let mut outb = buffer(output.as_mut_ptr(), output.len());
        call(
            "augmentation",
            &self.name,
            &self.found.library,
            None,
            |host| unsafe { (self.found.entry.apply)(self.inst, host, seed, &inb, &mut outb) },
        )?;
        if let Some((pos, bad)) = output
            .iter()
            .enumerate()
            .find(|(_, &t)| (t & !pretext_plugin::tokens::TARGET) as usize >= vocab)
        {
            return Err(CallError {
                what: "augmentation",
                name: self.name.clone(),
                library: self.found.library.path.display().to_string(),
                message: format!(
                    "produced token id {} at position {pos}, outside the vocabulary of {vocab}",
                    bad & !pretext_plugin::tokens::TARGET
                ),
                panicked: false,
            });
        }
        Ok(())
    }

    /// Transform one image; `output` must have the length of `output_shape(shape)`.
    pub fn apply(
        &self,
        seed: u64,
        input: &[f32],
        shape: (usize, usize, usize),
        output: &mut [f32],
        out_shape: (usize, usize, usize),
    ) -> Result<(), CallError> {
        let inb = image_buffer(shape, input.as_ptr() as *mut f32);
        let mut outb = image_buffer(out_shape, output.as_mut_ptr());
        call(
            "augmentation",
            &self.name,
            &self.found.library,
            None,
            |host| unsafe { (self.found.entry.apply)(self.inst, host, seed, &inb, &mut outb) },
        )?;
        if let Some(bad) = output.iter().find(|v| !v.is_finite()) {
            return Err(CallError {
                what: "augmentation",
                name: self.name.clone(),
                library: self.found.library.path.display().to_string(),
                message: format!("produced a non-finite value ({bad})"),
                panicked: false,
            });
        }
        Ok(())
    }
}
