//! Objectives: SSL losses built from host tensor operations on opaque handles.
//!
//! An objective never sees the engine's tensors. It receives [`Inputs`] (per-view handles of
//! encoder, projector, predictor and teacher outputs) and builds a scalar loss with the
//! methods of [`Tensor`]; the host runs each op on its engine with autodiff.

use crate::abi::{self, Handle, PtxObjectiveInputs, PtxStr, PtxTensorOps};
use crate::{Error, Params, Result};

/// What an objective asks of the host: number of views and the heads it needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Needs {
    /// Augmented views per sample and step.
    pub views: u32,
    /// Projector MLP `(hidden width, output width, layers)`; `None` = no projector.
    pub projector: Option<(u32, u32, u32)>,
    /// Predictor MLP hidden width (output width = projector output); `None` = none.
    pub predictor_hidden: Option<u32>,
    /// EMA teacher momentum `(start, end)`; `None` = no teacher.
    pub ema_teacher: Option<(f64, f64)>,
    /// The objective keeps persistent state between steps.
    pub uses_state: bool,
    /// Decoder MLP `(hidden width, layers)` from the encoder output back to the input
    /// (autoencoders); `None` = no decoder.
    pub decoder: Option<(u32, u32)>,
    /// Masked patch modelling: the fraction of patches hidden from the encoder (MAE);
    /// `None` = no masking.
    pub mask_ratio: Option<f64>,
    /// Masked token modelling (MLM): the host adds a head over the vocabulary and passes its
    /// logits at the positions the views flagged (see [`crate::tokens::TARGET`]).
    pub masked_tokens: bool,
    /// The views differ only through dropout (SimCSE): the model must have `dropout > 0`.
    pub needs_dropout: bool,
    /// Multi-crop: the EMA teacher sees only the first `n` views (the global crops); `None` =
    /// every view. [`Inputs::targets`] then has `n` entries.
    pub teacher_views: Option<u32>,
    /// `views` is the least number of views: the augment stage may declare more (local crops,
    /// possibly of a smaller size), and [`Inputs::views`] says how many came.
    pub more_views: bool,
    /// Prediction in latent space (I-JEPA): the host hides target blocks of a ViT's patch
    /// grid from the student, predicts the EMA teacher's embeddings of them and passes both
    /// ([`Inputs::latent_predictions`]). Needs one view and an EMA teacher.
    pub latent: Option<LatentPrediction>,
    /// Image–text pairs (CLIP): the host trains a text tower beside the image encoder on each
    /// sample's caption and passes its embeddings after the image views': with `views = 1`,
    /// [`Inputs::embeddings`] is `[image, text]`. The pretrain stage must name its captions
    /// (`text = { input = .. }`).
    pub paired_text: bool,
}

/// How the host masks and predicts for prediction in latent space (I-JEPA, Assran et al.,
/// 2023). Block sizes are drawn once per batch, block positions per image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentPrediction {
    /// Target blocks per image (≥ 1).
    pub blocks: u32,
    /// A target block's area as a fraction of the patch grid, `(low, high)` in (0, 1].
    pub target_scale: (f64, f64),
    /// A target block's height over width, drawn log-uniformly in `(low, high)`.
    pub target_aspect: (f64, f64),
    /// The context block's area as a fraction of the grid (square); the student sees its
    /// patches that lie in no target block.
    pub context_scale: (f64, f64),
    /// Transformer blocks of the predictor (≥ 1) and their width.
    pub predictor_depth: u32,
    pub predictor_dim: u32,
}

impl Default for LatentPrediction {
    /// The I-JEPA paper's masking: 4 targets of 15–20 % of the grid with aspect 0.75–1.5, a
    /// context block of 85–100 %; a small predictor (2 blocks of width 64) for small ViTs.
    fn default() -> Self {
        LatentPrediction {
            blocks: 4,
            target_scale: (0.15, 0.2),
            target_aspect: (0.75, 1.5),
            context_scale: (0.85, 1.0),
            predictor_depth: 2,
            predictor_dim: 64,
        }
    }
}

impl Default for Needs {
    fn default() -> Self {
        Needs {
            views: 2,
            projector: None,
            predictor_hidden: None,
            ema_teacher: None,
            uses_state: false,
            decoder: None,
            mask_ratio: None,
            masked_tokens: false,
            needs_dropout: false,
            teacher_views: None,
            more_views: false,
            paired_text: false,
            latent: None,
        }
    }
}

/// How an objective's trainable tensor starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamInit {
    /// Normal with this standard deviation (mean 0).
    Normal(f64),
    /// Uniform in `±bound`.
    Uniform(f64),
    /// Every entry this value.
    Constant(f64),
}

/// A trainable tensor the objective owns — DINO's prototypes, SwAV's, CLIP's temperature. The
/// host creates it (seeded), trains it with the model's optimiser, saves it in checkpoints and,
/// with an EMA teacher, keeps the teacher's average of it; [`Ops::param`] and
/// [`Ops::teacher_param`] read it inside [`Objective::loss`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub rows: usize,
    pub cols: usize,
    pub init: ParamInit,
    /// Whether the optimiser's weight decay applies (off for temperatures and scales).
    pub weight_decay: bool,
}

impl ParamInit {
    /// The ABI's `(INIT_* kind, scale)` for this initialisation.
    pub fn to_raw(self) -> (u32, f64) {
        match self {
            ParamInit::Normal(s) => (abi::INIT_NORMAL, s),
            ParamInit::Uniform(b) => (abi::INIT_UNIFORM, b),
            ParamInit::Constant(v) => (abi::INIT_CONSTANT, v),
        }
    }

    /// The initialisation an `(INIT_* kind, scale)` pair names; `None` for an unknown kind.
    pub fn from_raw(init: u32, scale: f64) -> Option<ParamInit> {
        match init {
            abi::INIT_NORMAL => Some(ParamInit::Normal(scale)),
            abi::INIT_UNIFORM => Some(ParamInit::Uniform(scale)),
            abi::INIT_CONSTANT => Some(ParamInit::Constant(scale)),
            _ => None,
        }
    }
}

impl ParamSpec {
    pub(crate) fn to_raw(self) -> abi::PtxParamDecl {
        let (init, scale) = self.init.to_raw();
        abi::PtxParamDecl {
            struct_size: std::mem::size_of::<abi::PtxParamDecl>() as u32,
            name: PtxStr::from_static(self.name),
            rows: self.rows as u32,
            cols: self.cols as u32,
            init,
            scale,
            weight_decay: u32::from(self.weight_decay),
        }
    }
}

impl Needs {
    pub(crate) fn to_raw(self) -> abi::PtxObjectiveNeeds {
        let (ph, po, pl) = self.projector.unwrap_or((0, 0, 0));
        let (ms, me) = self.ema_teacher.unwrap_or((0.0, 0.0));
        let lat = self.latent.unwrap_or(LatentPrediction {
            blocks: 0,
            target_scale: (0.0, 0.0),
            target_aspect: (0.0, 0.0),
            context_scale: (0.0, 0.0),
            predictor_depth: 0,
            predictor_dim: 0,
        });
        let pair = |p: (f64, f64)| [p.0, p.1];
        abi::PtxObjectiveNeeds {
            struct_size: std::mem::size_of::<abi::PtxObjectiveNeeds>() as u32,
            views: self.views,
            projector_hidden: ph,
            projector_out: po,
            projector_layers: pl,
            predictor_hidden: self.predictor_hidden.unwrap_or(0),
            ema_teacher: u32::from(self.ema_teacher.is_some()),
            ema_momentum_start: ms,
            ema_momentum_end: me,
            uses_state: u32::from(self.uses_state),
            decoder_hidden: self.decoder.map_or(0, |d| d.0),
            decoder_layers: self.decoder.map_or(0, |d| d.1),
            mask_ratio: self.mask_ratio.unwrap_or(0.0),
            masked_tokens: u32::from(self.masked_tokens),
            needs_dropout: u32::from(self.needs_dropout),
            teacher_views: self.teacher_views.unwrap_or(0),
            more_views: u32::from(self.more_views),
            n_params: 0,
            latent_blocks: lat.blocks,
            latent_target_scale: pair(lat.target_scale),
            latent_target_aspect: pair(lat.target_aspect),
            latent_context_scale: pair(lat.context_scale),
            latent_predictor_depth: lat.predictor_depth,
            latent_predictor_dim: lat.predictor_dim,
            paired_text: u32::from(self.paired_text),
            pad0: 0,
            reserved: [0; 3],
        }
    }
}

/// An SSL objective. Implement it, then list the type in [`crate::export_plugin!`].
pub trait Objective: Sized + 'static {
    /// The name pipelines use: `objective = { plugin = "<NAME>" }`.
    const NAME: &'static str;
    /// One line: what it is.
    const SUMMARY: &'static str;
    /// Markdown documentation of the parameters.
    const PARAMS_DOC: &'static str = "";

    /// Read and validate parameters. Called at validation time, before any training.
    fn new(params: &mut Params) -> Result<Self>;

    /// What the objective needs from the host.
    fn needs(&self) -> Needs;

    /// Trainable tensors the objective owns (none by default).
    fn parameters(&self) -> Vec<ParamSpec> {
        Vec::new()
    }

    /// Build the scalar loss of one step.
    fn loss<'a>(&mut self, ops: &'a Ops, inputs: &Inputs<'a>) -> Result<Tensor<'a>>;
}

/// An axis for reductions and normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Along rows (axis 0): e.g. the mean of each column.
    Rows,
    /// Along columns (axis 1): e.g. the norm of each row.
    Cols,
    /// Over every element.
    All,
}

impl Axis {
    fn raw(self) -> i32 {
        match self {
            Axis::Rows => 0,
            Axis::Cols => 1,
            Axis::All => -1,
        }
    }
}

/// The host's tensor operations for the current call.
pub struct Ops {
    raw: *const PtxTensorOps,
}

impl Ops {
    /// # Safety
    /// `raw` must be valid for the lifetime of the returned value.
    pub(crate) unsafe fn from_raw(raw: *const PtxTensorOps) -> Self {
        Ops { raw }
    }

    fn t(&self) -> &PtxTensorOps {
        // SAFETY: valid for the duration of the plugin call (from_raw's contract).
        unsafe { &*self.raw }
    }

    fn wrap(&self, h: Handle) -> Result<Tensor<'_>> {
        if h == 0 {
            Err(Error::Host)
        } else {
            Ok(Tensor { h, ops: self })
        }
    }

    /// Wrap a handle received from the host.
    pub fn tensor(&self, h: Handle) -> Result<Tensor<'_>> {
        self.wrap(h)
    }

    /// A constant tensor from row-major values (no gradient).
    pub fn constant(&self, data: &[f32], rows: usize, cols: usize) -> Result<Tensor<'_>> {
        if data.len() != rows * cols {
            return Err(Error::msg(format!(
                "constant: {} values given for a {rows}x{cols} tensor",
                data.len()
            )));
        }
        let t = self.t();
        self.wrap(unsafe { (t.constant)(t.ctx, data.as_ptr(), rows, cols) })
    }

    /// A `rows x cols` tensor filled with `value`.
    pub fn full(&self, value: f64, rows: usize, cols: usize) -> Result<Tensor<'_>> {
        let t = self.t();
        self.wrap(unsafe { (t.full)(t.ctx, value, rows, cols) })
    }

    /// The `n x n` identity matrix.
    pub fn eye(&self, n: usize) -> Result<Tensor<'_>> {
        let t = self.t();
        self.wrap(unsafe { (t.eye)(t.ctx, n) })
    }

    /// Persistent state saved under `key` by an earlier step, if any.
    pub fn state(&self, key: &str) -> Option<Tensor<'_>> {
        let t = self.t();
        let h = unsafe { (t.state_get)(t.ctx, PtxStr::borrowed(key)) };
        self.wrap(h).ok()
    }

    /// Keep a detached copy of `value` as persistent state under `key`.
    pub fn set_state(&self, key: &str, value: &Tensor) -> Result<()> {
        let t = self.t();
        status(unsafe { (t.state_set)(t.ctx, PtxStr::borrowed(key), value.h) })
    }

    /// Report a scalar as a per-epoch metric `objective.<name>`.
    pub fn report(&self, name: &str, value: &Tensor) -> Result<()> {
        let t = self.t();
        status(unsafe { (t.report)(t.ctx, PtxStr::borrowed(name), value.h) })
    }

    /// The student's copy of trainable tensor `name` (declared in
    /// [`Objective::parameters`]): gradients of the loss flow into it.
    pub fn param(&self, name: &str) -> Result<Tensor<'_>> {
        self.param_of(name, 0)
    }

    /// The EMA teacher's copy of trainable tensor `name` (no gradient); declare an
    /// `ema_teacher` in [`Needs`].
    pub fn teacher_param(&self, name: &str) -> Result<Tensor<'_>> {
        self.param_of(name, 1)
    }

    fn param_of(&self, name: &str, teacher: u32) -> Result<Tensor<'_>> {
        let t = self.t();
        self.wrap(unsafe { (t.param)(t.ctx, PtxStr::borrowed(name), teacher) })
    }
}

fn status(code: i32) -> Result<()> {
    if code == abi::PTX_OK {
        Ok(())
    } else {
        Err(Error::Host)
    }
}

/// A host tensor (2-D, `(rows, cols)`; scalars are `(1, 1)`). Binary ops broadcast a
/// dimension of size 1 against any size.
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    h: Handle,
    ops: &'a Ops,
}

impl std::fmt::Debug for Tensor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor(#{})", self.h)
    }
}

macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => $code:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self) -> Result<Tensor<'a>> {
            let t = self.ops.t();
            self.ops.wrap(unsafe { (t.unary)(t.ctx, abi::$code, self.h) })
        }
    )*};
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $code:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self, other: &Tensor) -> Result<Tensor<'a>> {
            let t = self.ops.t();
            self.ops.wrap(unsafe { (t.binary)(t.ctx, abi::$code, self.h, other.h) })
        }
    )*};
}

macro_rules! scalar_ops {
    ($($(#[$doc:meta])* $name:ident => $code:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self, s: f64) -> Result<Tensor<'a>> {
            let t = self.ops.t();
            self.ops.wrap(unsafe { (t.scalar)(t.ctx, abi::$code, self.h, s) })
        }
    )*};
}

macro_rules! reduce_ops {
    ($($(#[$doc:meta])* $name:ident => $code:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self, axis: Axis) -> Result<Tensor<'a>> {
            let t = self.ops.t();
            self.ops.wrap(unsafe { (t.reduce)(t.ctx, abi::$code, self.h, axis.raw()) })
        }
    )*};
}

impl<'a> Tensor<'a> {
    /// The raw handle (for passing back to the host).
    pub fn handle(&self) -> Handle {
        self.h
    }

    unary_ops! {
        neg => UN_NEG;
        exp => UN_EXP;
        /// Natural logarithm.
        ln => UN_LOG;
        sqrt => UN_SQRT;
        abs => UN_ABS;
        relu => UN_RELU;
        square => UN_SQUARE;
        /// Stop-gradient: same values, no gradient flows back through the result.
        detach => UN_DETACH;
        /// Matrix transpose.
        t => UN_TRANSPOSE;
        /// Diagonal of a square matrix as an `(n, 1)` column.
        diag => UN_DIAG;
    }

    binary_ops! {
        add => BIN_ADD;
        sub => BIN_SUB;
        mul => BIN_MUL;
        div => BIN_DIV;
        /// Matrix product `(m, k) x (k, n) -> (m, n)`.
        matmul => BIN_MATMUL;
    }

    scalar_ops! {
        add_scalar => SC_ADD;
        mul_scalar => SC_MUL;
        powf => SC_POW;
        clamp_min => SC_CLAMP_MIN;
        clamp_max => SC_CLAMP_MAX;
    }

    reduce_ops! {
        /// Sum, keeping the reduced axis with size 1.
        sum => RED_SUM;
        mean => RED_MEAN;
        logsumexp => RED_LOGSUMEXP;
        max => RED_MAX;
    }

    fn axis_op(&self, code: u32, axis: Axis, param: f64) -> Result<Tensor<'a>> {
        let t = self.ops.t();
        self.ops
            .wrap(unsafe { (t.axis_op)(t.ctx, code, self.h, axis.raw(), param) })
    }

    pub fn softmax(&self, axis: Axis) -> Result<Tensor<'a>> {
        self.axis_op(abi::AX_SOFTMAX, axis, 0.0)
    }

    pub fn log_softmax(&self, axis: Axis) -> Result<Tensor<'a>> {
        self.axis_op(abi::AX_LOG_SOFTMAX, axis, 0.0)
    }

    /// Divide by the L2 norm along `axis` (norm clamped below by `eps`).
    pub fn l2_normalize(&self, axis: Axis, eps: f64) -> Result<Tensor<'a>> {
        self.axis_op(abi::AX_L2_NORMALIZE, axis, eps)
    }

    /// Rows (`Axis::Rows`) or columns (`Axis::Cols`) `start..end`.
    pub fn slice(&self, axis: Axis, start: usize, end: usize) -> Result<Tensor<'a>> {
        let t = self.ops.t();
        self.ops
            .wrap(unsafe { (t.slice)(t.ctx, self.h, axis.raw(), start, end) })
    }

    /// Stack `self` and `other` along `axis` (`Axis::Rows`: more rows).
    pub fn concat(&self, other: &Tensor, axis: Axis) -> Result<Tensor<'a>> {
        let t = self.ops.t();
        self.ops
            .wrap(unsafe { (t.concat)(t.ctx, self.h, other.h, axis.raw()) })
    }

    /// Mean cross-entropy of these logits `(n, classes)` against class indices.
    pub fn cross_entropy(&self, labels: &[u32]) -> Result<Tensor<'a>> {
        let t = self.ops.t();
        self.ops
            .wrap(unsafe { (t.cross_entropy)(t.ctx, self.h, labels.as_ptr(), labels.len()) })
    }

    /// Top-1 accuracy of these logits `(n, classes)` against class indices: a `(1, 1)` tensor
    /// with no gradient, computed where the logits are (nothing is read back). Hosts older
    /// than this op get the same value from the logits read back.
    pub fn accuracy(&self, labels: &[u32]) -> Result<Tensor<'a>> {
        let t = self.ops.t();
        let end =
            std::mem::offset_of!(crate::abi::PtxTensorOps, accuracy) + std::mem::size_of::<usize>();
        if t.struct_size as usize >= end {
            return self
                .ops
                .wrap(unsafe { (t.accuracy)(t.ctx, self.h, labels.as_ptr(), labels.len()) });
        }
        let (n, c) = self.shape()?;
        if n == 0 || labels.len() != n {
            return Err(Error::msg(format!(
                "accuracy: {} labels for {n} rows",
                labels.len()
            )));
        }
        let values = self.to_vec()?;
        let mut correct = 0usize;
        for (row, &l) in values.chunks(c).zip(labels) {
            let best = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if row.get(l as usize).is_some_and(|v| *v >= best) {
                correct += 1;
            }
        }
        self.ops.constant(&[correct as f32 / n as f32], 1, 1)
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> Result<(usize, usize)> {
        let t = self.ops.t();
        let (mut r, mut c) = (0usize, 0usize);
        status(unsafe { (t.shape)(t.ctx, self.h, &mut r, &mut c) })?;
        Ok((r, c))
    }

    /// Copy the values out (row-major). Costs a device transfer on GPUs: use for checks only.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let (r, c) = self.shape()?;
        let mut out = vec![0f32; r * c];
        let t = self.ops.t();
        status(unsafe { (t.read)(t.ctx, self.h, out.as_mut_ptr(), out.len()) })?;
        Ok(out)
    }

    /// Mean squared error against `other` (a scalar).
    pub fn mse(&self, other: &Tensor) -> Result<Tensor<'a>> {
        self.sub(other)?.square()?.mean(Axis::All)
    }

    /// Column-wise covariance `(d, d)` of `(n, d)` samples (unbiased, divides by `n - 1`).
    pub fn covariance(&self) -> Result<Tensor<'a>> {
        let (n, _) = self.shape()?;
        if n < 2 {
            return Err(Error::msg("covariance needs at least 2 rows"));
        }
        let centered = self.sub(&self.mean(Axis::Rows)?)?;
        centered
            .t()?
            .matmul(&centered)?
            .mul_scalar(1.0 / (n as f64 - 1.0))
    }
}

/// The tensors of one step.
pub struct Inputs<'a> {
    pub(crate) raw: &'a PtxObjectiveInputs,
    pub(crate) ops: &'a Ops,
}

impl<'a> Inputs<'a> {
    fn per_view(&self, arr: *const Handle) -> Result<Vec<Tensor<'a>>> {
        self.handles(arr, self.raw.n_views as usize)
    }

    fn handles(&self, arr: *const Handle, n: usize) -> Result<Vec<Tensor<'a>>> {
        if arr.is_null() {
            return Err(Error::msg(
                "the host did not provide this head (declare it in needs())",
            ));
        }
        let hs = unsafe { std::slice::from_raw_parts(arr, n) };
        hs.iter().map(|&h| self.ops.wrap(h)).collect()
    }

    /// Number of views.
    pub fn views(&self) -> usize {
        self.raw.n_views as usize
    }
    /// Encoder outputs per view, `(batch, embed_dim)`.
    pub fn embeddings(&self) -> Result<Vec<Tensor<'a>>> {
        self.per_view(self.raw.embeddings)
    }
    /// Projector outputs per view.
    pub fn projections(&self) -> Result<Vec<Tensor<'a>>> {
        self.per_view(self.raw.projections)
    }
    /// Predictor outputs per view.
    pub fn predictions(&self) -> Result<Vec<Tensor<'a>>> {
        self.per_view(self.raw.predictions)
    }
    /// EMA-teacher projections (no gradient): one per view, or per teacher view (the first
    /// `teacher_views`) when [`Needs::teacher_views`] asked for fewer.
    pub fn targets(&self) -> Result<Vec<Tensor<'a>>> {
        self.handles(self.raw.targets, self.raw.n_targets as usize)
    }
    /// Epochs of the whole run ([`Inputs::epoch`] counts `0..epochs`).
    pub fn epochs(&self) -> u32 {
        self.raw.epochs
    }
    pub fn batch_size(&self) -> usize {
        self.raw.batch_size as usize
    }
    pub fn epoch(&self) -> u32 {
        self.raw.epoch
    }
    pub fn step(&self) -> u64 {
        self.raw.step
    }
    pub fn total_steps(&self) -> u64 {
        self.raw.total_steps
    }
    /// The network inputs per view, `(batch, C·H·W)` (no gradient).
    pub fn view_inputs(&self) -> Result<Vec<Tensor<'a>>> {
        self.per_view(self.raw.view_inputs)
    }
    /// The samples before augmentation, `(batch, C·H·W)` (no gradient).
    pub fn originals(&self) -> Result<Tensor<'a>> {
        self.ops
            .wrap(self.raw.originals)
            .map_err(|_| Error::msg("the host provided no original samples"))
    }
    /// Masked patch modelling: `(predicted patches, true patches, mask)`, each with one row
    /// per patch of every sample; the mask is 1 where the patch was hidden from the encoder.
    pub fn masked_patches(&self) -> Result<(Tensor<'a>, Tensor<'a>, Tensor<'a>)> {
        let need = |h| {
            self.ops.wrap(h).map_err(|_| {
                Error::msg("the host provided no masked patches (declare mask_ratio in needs())")
            })
        };
        Ok((
            need(self.raw.patch_predictions)?,
            need(self.raw.patch_targets)?,
            need(self.raw.patch_mask)?,
        ))
    }
    /// Masked token modelling: `(logits, targets)`: logits over the vocabulary at every
    /// flagged position `(n, vocab)` and the original ids there as class indices.
    pub fn masked_tokens(&self) -> Result<(Tensor<'a>, Vec<u32>)> {
        let none =
            || Error::msg("the host provided no masked tokens (declare masked_tokens in needs())");
        let struct_ok = self.raw.struct_size as usize >= std::mem::size_of::<PtxObjectiveInputs>();
        if !struct_ok {
            return Err(none());
        }
        let logits = self.ops.wrap(self.raw.token_logits).map_err(|_| none())?;
        let targets = self.ops.wrap(self.raw.token_targets).map_err(|_| none())?;
        let ids = targets.to_vec()?.into_iter().map(|v| v as u32).collect();
        Ok((logits, ids))
    }
    /// Decoder outputs per view (declare a decoder in `needs()`).
    pub fn decoded(&self) -> Result<Vec<Tensor<'a>>> {
        self.per_view(self.raw.decoded)
    }
    /// Prediction in latent space: `(predictions, targets)`, one row per target patch of
    /// every block of every image, `(rows, encoder width)`: the predictor's outputs and the
    /// EMA teacher's encoder outputs at the same patches (no gradient).
    pub fn latent_predictions(&self) -> Result<(Tensor<'a>, Tensor<'a>)> {
        let need = |h| {
            self.ops.wrap(h).map_err(|_| {
                Error::msg("the host provided no latent predictions (declare `latent` in needs())")
            })
        };
        Ok((
            need(self.raw.latent_predictions)?,
            need(self.raw.latent_targets)?,
        ))
    }
}
