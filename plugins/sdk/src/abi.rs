//! The plugin ABI, version 3: the `#[repr(C)]` types and constants that cross the boundary
//! between the pretext host and a plugin library.
//!
//! Version 3 (this one) adds, over version 2, prediction in latent space (I-JEPA): the host
//! masks target blocks of a ViT's patch grid, encodes the rest with the student, runs a
//! predictor at the target positions and passes its outputs beside the EMA teacher's
//! embeddings of those patches (`PtxObjectiveNeeds::latent_*`,
//! `PtxObjectiveInputs::latent_predictions`, `latent_targets`).
//!
//! Version 2 added, over version 1: views of different sizes (multi-crop) with an
//! EMA teacher that sees only the first views (`PtxObjectiveNeeds::teacher_views`,
//! `more_views`, `PtxObjectiveInputs::n_targets`), trainable tensors owned by an objective
//! (`PtxObjectiveNeeds::n_params`, `PtxObjectiveEntry::param_decl`, `PtxTensorOps::param`),
//! and the run's length in epochs (`PtxObjectiveInputs::epochs`). A host speaking one version
//! refuses libraries built for the other.
//!
//! Rules (see docs/plugins/abi.md):
//! - The library exports one symbol, [`ENTRY_SYMBOL`], an `extern "C" fn() -> *const
//!   PtxPluginInfo`. The first field of [`PtxPluginInfo`] is the ABI version; the host reads it
//!   before anything else and refuses any other version.
//! - Only these types, plain integers/floats and raw pointers cross the boundary: no Rust
//!   `String`, `Vec`, trait objects or panics.
//! - Memory is freed on the side that allocated it. Buffers the host keeps (augmentation
//!   outputs, error messages, tensors) are allocated by the host; the plugin writes into them or
//!   hands the host borrowed bytes that the host copies before the call returns.
//! - Every function returns a status code ([`PTX_OK`], [`PTX_ERROR`], [`PTX_PANIC`]); on
//!   failure the message was passed to [`PtxHost::set_error`].
//! - Libraries are never unloaded, so `'static` data in a plugin stays valid.
//! - Structs that may grow carry `struct_size`; fields are only ever appended.

use std::ffi::c_void;

/// The ABI version this SDK speaks. The host refuses a plugin with any other value.
pub const ABI_VERSION: u32 = 3;

/// The one symbol every plugin library exports (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"pretext_plugin_entry\0";

/// The signature of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const PtxPluginInfo;

/// Success.
pub const PTX_OK: i32 = 0;
/// A reported error: the message was passed to [`PtxHost::set_error`].
pub const PTX_ERROR: i32 = 1;
/// The plugin panicked; the panic was caught and its message passed to `set_error`.
pub const PTX_PANIC: i32 = 2;

/// A borrowed UTF-8 string: valid only for the duration of the call it is passed to, unless
/// it points into `'static` plugin data (names and docs in [`PtxPluginInfo`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PtxStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl PtxStr {
    pub const fn from_static(s: &'static str) -> Self {
        PtxStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
    pub fn borrowed(s: &str) -> Self {
        PtxStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
    /// # Safety
    /// `ptr..ptr+len` must be valid UTF-8 that outlives `'a`.
    pub unsafe fn as_str<'a>(&self) -> &'a str {
        if self.ptr.is_null() || self.len == 0 {
            return "";
        }
        let bytes = std::slice::from_raw_parts(self.ptr, self.len);
        std::str::from_utf8(bytes).unwrap_or("<invalid utf-8>")
    }
}

/// Log levels for [`PtxHost::log`], mapped onto the host's `tracing` levels.
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;
pub const LOG_TRACE: u32 = 5;

/// Callbacks into the host, passed to every plugin function.
#[repr(C)]
pub struct PtxHost {
    pub struct_size: u32,
    pub ctx: *mut c_void,
    /// Emit one log line through the host's `tracing` subscriber.
    pub log: unsafe extern "C" fn(ctx: *mut c_void, level: u32, msg: PtxStr),
    /// Record the error message of the current call (the host copies it).
    pub set_error: unsafe extern "C" fn(ctx: *mut c_void, msg: PtxStr),
}

/// What the entry symbol returns: a description of everything in the library.
/// Points to `'static` data inside the plugin.
#[repr(C)]
pub struct PtxPluginInfo {
    /// Must be [`ABI_VERSION`]; read before any other field.
    pub abi_version: u32,
    pub struct_size: u32,
    /// Library name, e.g. `pretext-contrastive`.
    pub name: PtxStr,
    /// Library version (the plugin crate's version).
    pub version: PtxStr,
    /// Version of `pretext-plugin` the library was built with.
    pub sdk_version: PtxStr,
    pub objectives: *const PtxObjectiveEntry,
    pub n_objectives: usize,
    pub augmentations: *const PtxAugmentEntry,
    pub n_augmentations: usize,
}

// ---------------------------------------------------------------------------------------------
// Parameters

pub const PARAM_BOOL: u32 = 0;
pub const PARAM_INT: u32 = 1;
pub const PARAM_FLOAT: u32 = 2;
pub const PARAM_STR: u32 = 3;
pub const PARAM_FLOAT_LIST: u32 = 4;

/// One `key = value` parameter from the pipeline file, e.g. `temperature = 0.2`.
/// Nested tables are rejected by the host before a plugin sees them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PtxParam {
    pub key: PtxStr,
    /// One of the `PARAM_*` constants; selects the field that holds the value.
    pub kind: u32,
    pub b: u8,
    pub i: i64,
    pub f: f64,
    pub s: PtxStr,
    pub list: *const f64,
    pub list_len: usize,
}

// ---------------------------------------------------------------------------------------------
// Objectives

/// A tensor owned by the host, named by an opaque non-zero handle. `0` means "no tensor".
pub type Handle = u64;

/// One objective in a library.
#[repr(C)]
pub struct PtxObjectiveEntry {
    pub name: PtxStr,
    /// One line: what the objective is.
    pub summary: PtxStr,
    /// Markdown documentation of the parameters.
    pub params_doc: PtxStr,
    /// Validate `params` and create an instance (owned by the plugin, freed by `destroy`).
    pub create: unsafe extern "C" fn(
        host: *const PtxHost,
        params: *const PtxParam,
        n_params: usize,
        out: *mut *mut c_void,
    ) -> i32,
    /// Fill in what the objective needs from the host.
    pub needs: unsafe extern "C" fn(
        inst: *mut c_void,
        host: *const PtxHost,
        out: *mut PtxObjectiveNeeds,
    ) -> i32,
    /// Build the loss of one step from host tensor ops; write the scalar loss handle to `out`.
    pub loss: unsafe extern "C" fn(
        inst: *mut c_void,
        host: *const PtxHost,
        ops: *const PtxTensorOps,
        inputs: *const PtxObjectiveInputs,
        out: *mut Handle,
    ) -> i32,
    /// Describe trainable tensor `index` (`0..n_params` of [`PtxObjectiveNeeds`]) in `out`.
    /// Called after `needs`, before training; the host creates, trains, checkpoints and (with
    /// an EMA teacher) averages these tensors like the model's own.
    pub param_decl: unsafe extern "C" fn(
        inst: *mut c_void,
        host: *const PtxHost,
        index: u32,
        out: *mut PtxParamDecl,
    ) -> i32,
    pub destroy: unsafe extern "C" fn(inst: *mut c_void),
}

/// What an objective asks of the host. The host fills defaults (zeros) before calling `needs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PtxObjectiveNeeds {
    pub struct_size: u32,
    /// Number of augmented views of each sample per step (≥ 1).
    pub views: u32,
    /// Projector MLP after the encoder: hidden width and output width (0 = no projector),
    /// and number of layers (≥ 1 when present).
    pub projector_hidden: u32,
    pub projector_out: u32,
    pub projector_layers: u32,
    /// Predictor MLP after the projector (BYOL/SimSiam); 0 = none.
    pub predictor_hidden: u32,
    /// 1 = keep an exponential-moving-average teacher of encoder+projector.
    pub ema_teacher: u32,
    /// EMA momentum at the start and end of training (cosine schedule between them).
    pub ema_momentum_start: f64,
    pub ema_momentum_end: f64,
    /// 1 = the objective keeps persistent state through `state_get`/`state_set`.
    pub uses_state: u32,
    /// Decoder MLP from the encoder output back to the input (autoencoders): hidden width
    /// (0 = no decoder) and number of layers.
    pub decoder_hidden: u32,
    pub decoder_layers: u32,
    /// Masked patch modelling (MAE): the fraction of patches hidden from the encoder (0 =
    /// none). Needs a ViT encoder; the host adds a light decoder that predicts every patch.
    pub mask_ratio: f64,
    /// Masked token modelling (MLM): 1 = the host adds a prediction head over the vocabulary
    /// and passes logits at the positions the views flagged with `tokens::TARGET`.
    pub masked_tokens: u32,
    /// 1 = the views differ only through dropout (SimCSE): the host refuses a model without
    /// dropout.
    pub needs_dropout: u32,
    /// Multi-crop: the EMA teacher sees only the first `teacher_views` views (the global
    /// crops); 0 = every view.
    pub teacher_views: u32,
    /// 1 = `views` is the least number of views: the augment stage may declare more (local
    /// crops), and the inputs then carry every declared view.
    pub more_views: u32,
    /// Number of trainable tensors the objective owns (see `PtxObjectiveEntry::param_decl`).
    pub n_params: u32,
    /// Prediction in latent space (I-JEPA): the number of target blocks per image (0 = none).
    /// Needs a ViT encoder, one view and an EMA teacher. Each step the host draws, per batch,
    /// each target block's size (`latent_target_scale`: its area as a fraction of the patch
    /// grid, `latent_target_aspect`: height over width, drawn log-uniformly) and the context
    /// block's (`latent_context_scale`, square), and per image their positions; the student
    /// encodes the context block's patches that are in no target block, and a predictor
    /// (`latent_predictor_depth` transformer blocks of width `latent_predictor_dim`) predicts
    /// the teacher's output at every target patch from them.
    pub latent_blocks: u32,
    pub latent_target_scale: [f64; 2],
    pub latent_target_aspect: [f64; 2],
    pub latent_context_scale: [f64; 2],
    pub latent_predictor_depth: u32,
    pub latent_predictor_dim: u32,
    /// 1 = image–text pairs (CLIP): the host adds a text tower over each sample's caption
    /// (the pretrain stage's `text` dataset, paired by sample id) and passes its embeddings
    /// after the image views' (`embeddings[views]`). Needs `views` = 1. Taken from what was
    /// `reserved[0]`, so the struct keeps its size and older plugins (zeros there) ask for
    /// nothing.
    pub paired_text: u32,
    pub pad0: u32,
    pub reserved: [u64; 3],
}

/// Initial values of an objective's trainable tensor.
pub const INIT_NORMAL: u32 = 0;
pub const INIT_UNIFORM: u32 = 1;
pub const INIT_CONSTANT: u32 = 2;

/// One trainable tensor an objective owns (DINO's prototypes, CLIP's temperature).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PtxParamDecl {
    pub struct_size: u32,
    /// The name the objective asks for it by (`PtxTensorOps::param`); must point to `'static`
    /// plugin data. Stored as `objective.<name>` in checkpoints.
    pub name: PtxStr,
    pub rows: u32,
    pub cols: u32,
    /// One of the `INIT_*` constants, with `scale`: the standard deviation (normal), the bound
    /// (uniform in `±scale`) or the value (constant).
    pub init: u32,
    pub scale: f64,
    /// 1 = the optimiser's weight decay applies to it.
    pub weight_decay: u32,
}

/// The tensors of one step, per view. Arrays have `n_views` entries; an array pointer is null
/// when the corresponding head does not exist.
#[repr(C)]
pub struct PtxObjectiveInputs {
    pub struct_size: u32,
    pub n_views: u32,
    /// Encoder outputs, `(batch, embed_dim)`.
    pub embeddings: *const Handle,
    /// Projector outputs, `(batch, projector_out)`.
    pub projections: *const Handle,
    /// Predictor outputs.
    pub predictions: *const Handle,
    /// EMA-teacher projections (no gradient); `n_targets` entries.
    pub targets: *const Handle,
    pub batch_size: u32,
    pub epoch: u32,
    pub step: u64,
    pub total_steps: u64,
    /// The network inputs per view, `(batch, C·H·W)` in `[0, 1]` (no gradient).
    pub view_inputs: *const Handle,
    /// The samples before augmentation, `(batch, C·H·W)` (one handle, no gradient).
    pub originals: Handle,
    /// Decoder outputs per view, `(batch, C·H·W)`; null without a decoder.
    pub decoded: *const Handle,
    /// Masked patch modelling (view 0): predicted patches `(batch · patches, pixels per
    /// patch)`, the true patches in the same layout, and the mask `(batch · patches, 1)`
    /// (1 = hidden from the encoder). 0 when `mask_ratio` is 0.
    pub patch_predictions: Handle,
    pub patch_targets: Handle,
    pub patch_mask: Handle,
    /// Masked token modelling (view 0): logits over the vocabulary at every flagged position
    /// `(n_flagged, vocab)` and the original token ids there `(n_flagged, 1)` (as floats, no
    /// gradient). 0 without `masked_tokens`.
    pub token_logits: Handle,
    pub token_targets: Handle,
    /// Entries of `targets` (the EMA teacher's views): `n_views`, or `teacher_views` when the
    /// objective asked for fewer.
    pub n_targets: u32,
    /// Epochs of the whole run (`epoch` counts `0..epochs`).
    pub epochs: u32,
    /// Prediction in latent space: the predictor's output at every target patch `(rows,
    /// encoder width)` and the EMA teacher's encoder output there in the same row order (no
    /// gradient). 0 without `latent_blocks`.
    pub latent_predictions: Handle,
    pub latent_targets: Handle,
}

// Op codes. Tensors are 2-D `(rows, cols)`; a scalar is `(1, 1)`. Binary ops broadcast a
// dimension of size 1 against any size (numpy rules on two axes).
pub const UN_NEG: u32 = 1;
pub const UN_EXP: u32 = 2;
pub const UN_LOG: u32 = 3;
pub const UN_SQRT: u32 = 4;
pub const UN_ABS: u32 = 5;
pub const UN_RELU: u32 = 6;
pub const UN_SQUARE: u32 = 7;
/// Stop-gradient: the result has the same values and no gradient flows back.
pub const UN_DETACH: u32 = 8;
pub const UN_TRANSPOSE: u32 = 9;
/// Diagonal of a square matrix as a column `(n, 1)`.
pub const UN_DIAG: u32 = 10;

pub const BIN_ADD: u32 = 1;
pub const BIN_SUB: u32 = 2;
pub const BIN_MUL: u32 = 3;
pub const BIN_DIV: u32 = 4;
pub const BIN_MATMUL: u32 = 5;

pub const SC_ADD: u32 = 1;
pub const SC_MUL: u32 = 2;
pub const SC_POW: u32 = 3;
pub const SC_CLAMP_MIN: u32 = 4;
pub const SC_CLAMP_MAX: u32 = 5;

/// Reductions keep the reduced axis with size 1. `axis`: 0 = over rows, 1 = over columns,
/// -1 = over everything (result `(1, 1)`).
pub const RED_SUM: u32 = 1;
pub const RED_MEAN: u32 = 2;
pub const RED_LOGSUMEXP: u32 = 3;
pub const RED_MAX: u32 = 4;

/// Shape-preserving ops along an axis; `param` is the epsilon for L2-normalisation.
pub const AX_SOFTMAX: u32 = 1;
pub const AX_LOG_SOFTMAX: u32 = 2;
pub const AX_L2_NORMALIZE: u32 = 3;

/// Host tensor operations. Every op returns a new handle, or 0 on failure (the host keeps the
/// message and reports it when the plugin function returns an error). Handles live until the
/// end of the step unless released.
#[repr(C)]
pub struct PtxTensorOps {
    pub struct_size: u32,
    pub ctx: *mut c_void,
    pub unary: unsafe extern "C" fn(ctx: *mut c_void, op: u32, a: Handle) -> Handle,
    pub binary: unsafe extern "C" fn(ctx: *mut c_void, op: u32, a: Handle, b: Handle) -> Handle,
    pub scalar: unsafe extern "C" fn(ctx: *mut c_void, op: u32, a: Handle, s: f64) -> Handle,
    pub reduce: unsafe extern "C" fn(ctx: *mut c_void, op: u32, a: Handle, axis: i32) -> Handle,
    pub axis_op:
        unsafe extern "C" fn(ctx: *mut c_void, op: u32, a: Handle, axis: i32, param: f64) -> Handle,
    /// Rows `start..end` (axis 0) or columns (axis 1).
    pub slice: unsafe extern "C" fn(
        ctx: *mut c_void,
        a: Handle,
        axis: i32,
        start: usize,
        end: usize,
    ) -> Handle,
    pub concat: unsafe extern "C" fn(ctx: *mut c_void, a: Handle, b: Handle, axis: i32) -> Handle,
    /// Mean cross-entropy of `logits (n, c)` against class indices `labels[0..n]`.
    pub cross_entropy: unsafe extern "C" fn(
        ctx: *mut c_void,
        logits: Handle,
        labels: *const u32,
        n: usize,
    ) -> Handle,
    /// A constant (no gradient) from `rows * cols` row-major values.
    pub constant: unsafe extern "C" fn(
        ctx: *mut c_void,
        data: *const f32,
        rows: usize,
        cols: usize,
    ) -> Handle,
    pub full:
        unsafe extern "C" fn(ctx: *mut c_void, value: f64, rows: usize, cols: usize) -> Handle,
    pub eye: unsafe extern "C" fn(ctx: *mut c_void, n: usize) -> Handle,
    pub shape: unsafe extern "C" fn(
        ctx: *mut c_void,
        a: Handle,
        rows: *mut usize,
        cols: *mut usize,
    ) -> i32,
    /// Copy the values of `a` (row-major) into `out[0..len]`; `len` must equal rows*cols.
    pub read: unsafe extern "C" fn(ctx: *mut c_void, a: Handle, out: *mut f32, len: usize) -> i32,
    /// Report a scalar as a per-epoch metric named `objective.<name>`.
    pub report: unsafe extern "C" fn(ctx: *mut c_void, name: PtxStr, a: Handle) -> i32,
    /// Persistent, detached state across steps (e.g. a MoCo queue). 0 if absent.
    pub state_get: unsafe extern "C" fn(ctx: *mut c_void, key: PtxStr) -> Handle,
    pub state_set: unsafe extern "C" fn(ctx: *mut c_void, key: PtxStr, a: Handle) -> i32,
    /// Free a handle early (optional).
    pub release: unsafe extern "C" fn(ctx: *mut c_void, a: Handle),
    /// Top-1 accuracy of `logits (n, c)` against `labels[0..n]`: a `(1, 1)` tensor with no
    /// gradient, computed on the device (appended: check `struct_size` before use).
    pub accuracy: unsafe extern "C" fn(
        ctx: *mut c_void,
        logits: Handle,
        labels: *const u32,
        n: usize,
    ) -> Handle,
    /// The objective's trainable tensor `name` (declared through `param_decl`): with
    /// `teacher = 0` the student's copy (gradients flow into it), with `teacher = 1` the EMA
    /// teacher's copy (no gradient; 0 without a teacher).
    pub param: unsafe extern "C" fn(ctx: *mut c_void, name: PtxStr, teacher: u32) -> Handle,
}

// ---------------------------------------------------------------------------------------------
// Augmentations

pub const DTYPE_F32: u32 = 0;
pub const DTYPE_U8: u32 = 1;
pub const DTYPE_U32: u32 = 2;

pub const MODALITY_IMAGE: u32 = 1;
pub const MODALITY_TOKENS: u32 = 2;

/// A dense buffer with up to four dimensions. Images are `f32`, shape `(channels, height,
/// width)`, values in `[0, 1]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PtxBuffer {
    pub dtype: u32,
    pub rank: u32,
    pub shape: [u32; 4],
    pub data: *mut c_void,
}

/// One augmentation in a library: a per-sample function, deterministic given its seed.
/// `apply` may be called from several host threads at once on the same instance.
#[repr(C)]
pub struct PtxAugmentEntry {
    pub name: PtxStr,
    pub summary: PtxStr,
    pub params_doc: PtxStr,
    /// One of the `MODALITY_*` constants.
    pub modality: u32,
    pub create: unsafe extern "C" fn(
        host: *const PtxHost,
        params: *const PtxParam,
        n_params: usize,
        out: *mut *mut c_void,
    ) -> i32,
    /// The output shape for an input shape (only `rank` and `shape` of `out` are written).
    pub output_shape: unsafe extern "C" fn(
        inst: *mut c_void,
        host: *const PtxHost,
        input: *const PtxBuffer,
        out: *mut PtxBuffer,
    ) -> i32,
    /// Transform `input` into `output` (host-allocated, of the shape `output_shape` gave).
    pub apply: unsafe extern "C" fn(
        inst: *mut c_void,
        host: *const PtxHost,
        seed: u64,
        input: *const PtxBuffer,
        output: *mut PtxBuffer,
    ) -> i32,
    pub destroy: unsafe extern "C" fn(inst: *mut c_void),
}
