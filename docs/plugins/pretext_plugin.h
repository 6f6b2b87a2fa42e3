/*
 * pretext plugin ABI, version 3, for C (and anything that can call and export C functions).
 *
 * This header mirrors plugins/sdk/src/abi.rs, which is normative; a test
 * (tests/e2e/docs_template.rs) checks that every struct here has the fields of its Rust
 * counterpart, in the same order. The rules are in docs/plugins/abi.md.
 *
 * A plugin library exports one function:
 *
 *     const PtxPluginInfo *pretext_plugin_entry(void);
 *
 * returning a pointer to static data whose first field is PTX_ABI_VERSION.
 */
#ifndef PRETEXT_PLUGIN_H
#define PRETEXT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PTX_ABI_VERSION 3u
#define PTX_ENTRY_SYMBOL "pretext_plugin_entry"

/* Status codes returned by every plugin function. */
#define PTX_OK 0
#define PTX_ERROR 1 /* the message was passed to PtxHost.set_error */
#define PTX_PANIC 2 /* a crash was caught; the message was passed to set_error */

/* A UTF-8 string, not NUL-terminated. Strings the host passes in are borrowed for the call;
 * strings in PtxPluginInfo must be static. */
typedef struct PtxStr {
    const uint8_t *ptr;
    size_t len;
} PtxStr;

/* Log levels of PtxHost.log. */
#define PTX_LOG_ERROR 1u
#define PTX_LOG_WARN 2u
#define PTX_LOG_INFO 3u
#define PTX_LOG_DEBUG 4u
#define PTX_LOG_TRACE 5u

/* Callbacks into the host, passed to every plugin function. */
typedef struct PtxHost {
    uint32_t struct_size;
    void *ctx;
    void (*log)(void *ctx, uint32_t level, PtxStr msg);
    /* Record the error message of the current call (the host copies it). */
    void (*set_error)(void *ctx, PtxStr msg);
} PtxHost;

struct PtxObjectiveEntry;
struct PtxAugmentEntry;

/* What pretext_plugin_entry returns. abi_version is read before anything else. */
typedef struct PtxPluginInfo {
    uint32_t abi_version; /* PTX_ABI_VERSION */
    uint32_t struct_size; /* sizeof(PtxPluginInfo) */
    PtxStr name;          /* library name, e.g. "my-c-plugin" */
    PtxStr version;       /* library version */
    PtxStr sdk_version;   /* the pretext-plugin version the ABI was taken from, e.g. "0.3.0" */
    const struct PtxObjectiveEntry *objectives;
    size_t n_objectives;
    const struct PtxAugmentEntry *augmentations;
    size_t n_augmentations;
} PtxPluginInfo;

/* ------------------------------------------------------------------------------------------
 * Parameters: one `key = value` of the pipeline file each. */

#define PTX_PARAM_BOOL 0u
#define PTX_PARAM_INT 1u
#define PTX_PARAM_FLOAT 2u
#define PTX_PARAM_STR 3u
#define PTX_PARAM_FLOAT_LIST 4u

typedef struct PtxParam {
    PtxStr key;
    uint32_t kind; /* PTX_PARAM_*: selects the field below that holds the value */
    uint8_t b;
    int64_t i;
    double f;
    PtxStr s;
    const double *list;
    size_t list_len;
} PtxParam;

/* ------------------------------------------------------------------------------------------
 * Objectives */

/* A tensor owned by the host; 0 = no tensor (or an error). */
typedef uint64_t PtxHandle;

/* What an objective asks of the host. The host zeroes it and sets struct_size first. */
typedef struct PtxObjectiveNeeds {
    uint32_t struct_size;
    uint32_t views;            /* augmented views per sample, 1 to 16 */
    uint32_t projector_hidden; /* projector MLP: hidden width, output width (0 = none), layers */
    uint32_t projector_out;
    uint32_t projector_layers;
    uint32_t predictor_hidden; /* predictor MLP after the projector; 0 = none */
    uint32_t ema_teacher;      /* 1 = EMA teacher of encoder + projector */
    double ema_momentum_start;
    double ema_momentum_end;
    uint32_t uses_state;     /* 1 = uses state_get / state_set */
    uint32_t decoder_hidden; /* decoder MLP back to the input; 0 = none */
    uint32_t decoder_layers;
    double mask_ratio; /* masked patch modelling (ViT encoders); 0 = none */
    /* 1 = masked token modelling (text): the host adds a prediction head over the vocabulary
     * and passes token_logits / token_targets for the positions the view flagged. */
    uint32_t masked_tokens;
    uint32_t needs_dropout; /* 1 = the views differ only through dropout (SimCSE) */
    /* ABI v2. Multi-crop: the EMA teacher sees only the first teacher_views views (the global
     * crops); 0 = every view. */
    uint32_t teacher_views;
    uint32_t more_views; /* 1 = views is a minimum: the augment stage may declare more */
    uint32_t n_params;   /* trainable tensors the objective owns (see param_decl) */
    /* ABI v3. Prediction in latent space (I-JEPA; ViT, one view, EMA teacher): target blocks
     * per image (0 = none); each block's area as a fraction of the patch grid and its aspect
     * (height / width, drawn log-uniformly); the context block's area (square); the
     * predictor's transformer blocks and width. */
    uint32_t latent_blocks;
    double latent_target_scale[2];
    double latent_target_aspect[2];
    double latent_context_scale[2];
    uint32_t latent_predictor_depth;
    uint32_t latent_predictor_dim;
    /* Image-text pairs (CLIP; one view): 1 = the host trains a text tower on each sample's
     * caption and passes its embeddings after the image view's (embeddings[1]). Taken from
     * reserved[0]; pad0 keeps the layout. */
    uint32_t paired_text;
    uint32_t pad0;
    uint64_t reserved[3];
} PtxObjectiveNeeds;

#define PTX_INIT_NORMAL 0u  /* scale: standard deviation */
#define PTX_INIT_UNIFORM 1u /* scale: bound, values in [-scale, scale] */
#define PTX_INIT_CONSTANT 2u /* scale: the value */

/* ABI v2: one trainable tensor an objective owns (prototypes, a temperature). The host creates
 * it (seeded), trains, checkpoints and, with an EMA teacher, averages it like the model's own;
 * the loss reads it with ops->param. */
typedef struct PtxParamDecl {
    uint32_t struct_size;
    PtxStr name; /* must point to static data; stored as objective.<name> */
    uint32_t rows;
    uint32_t cols;
    uint32_t init; /* PTX_INIT_* */
    double scale;
    uint32_t weight_decay; /* 1 = the optimiser's weight decay applies */
} PtxParamDecl;

/* The tensors of one step. Arrays have n_views entries (targets: n_targets); NULL when the
 * head does not exist. Views may differ in size (multi-crop): each view_inputs entry is
 * (batch, C*h*w) at its own size. */
typedef struct PtxObjectiveInputs {
    uint32_t struct_size;
    uint32_t n_views;
    const PtxHandle *embeddings;  /* encoder outputs (batch, embed_dim) */
    const PtxHandle *projections; /* projector outputs */
    const PtxHandle *predictions; /* predictor outputs */
    const PtxHandle *targets;     /* EMA-teacher projections, no gradient; n_targets of them */
    uint32_t batch_size;
    uint32_t epoch;
    uint64_t step;
    uint64_t total_steps;
    const PtxHandle *view_inputs; /* network inputs (batch, C*H*W), no gradient */
    PtxHandle originals;          /* samples before augmentation (batch, C*H*W) */
    const PtxHandle *decoded;     /* decoder outputs (batch, C*H*W) */
    PtxHandle patch_predictions;  /* masked patch modelling: (batch*patches, pixels per patch) */
    PtxHandle patch_targets;
    PtxHandle patch_mask; /* (batch*patches, 1), 1 = hidden from the encoder */
    /* Appended: read only when struct_size covers them. Masked token modelling (view 0):
     * logits at every flagged position (n_flagged, vocab) and the original token ids there
     * (n_flagged, 1) as floats, no gradient; 0 without masked_tokens. */
    PtxHandle token_logits;
    PtxHandle token_targets;
    uint32_t n_targets; /* ABI v2: entries of targets (teacher_views when it asked for fewer) */
    uint32_t epochs;    /* ABI v2: epochs of the whole run (epoch counts 0..epochs) */
    /* ABI v3: prediction in latent space: the predictor's output at every target patch
     * (rows, encoder width) and the EMA teacher's encoder output there, same rows, no
     * gradient; 0 without latent_blocks. */
    PtxHandle latent_predictions;
    PtxHandle latent_targets;
} PtxObjectiveInputs;

/* Op codes. Tensors are 2-D (rows, cols); a scalar is (1, 1). Binary ops broadcast a
 * dimension of size 1. Axis: 0 = along rows (e.g. the mean of each column), 1 = along
 * columns (e.g. the norm of each row), -1 = everything. Reductions keep the reduced axis. */
#define PTX_UN_NEG 1u
#define PTX_UN_EXP 2u
#define PTX_UN_LOG 3u
#define PTX_UN_SQRT 4u
#define PTX_UN_ABS 5u
#define PTX_UN_RELU 6u
#define PTX_UN_SQUARE 7u
#define PTX_UN_DETACH 8u    /* stop-gradient */
#define PTX_UN_TRANSPOSE 9u
#define PTX_UN_DIAG 10u     /* diagonal of a square matrix as (n, 1) */

#define PTX_BIN_ADD 1u
#define PTX_BIN_SUB 2u
#define PTX_BIN_MUL 3u
#define PTX_BIN_DIV 4u
#define PTX_BIN_MATMUL 5u

#define PTX_SC_ADD 1u
#define PTX_SC_MUL 2u
#define PTX_SC_POW 3u
#define PTX_SC_CLAMP_MIN 4u
#define PTX_SC_CLAMP_MAX 5u

#define PTX_RED_SUM 1u
#define PTX_RED_MEAN 2u
#define PTX_RED_LOGSUMEXP 3u
#define PTX_RED_MAX 4u

#define PTX_AX_SOFTMAX 1u
#define PTX_AX_LOG_SOFTMAX 2u
#define PTX_AX_L2_NORMALIZE 3u /* param: epsilon */

/* Host tensor operations. Every op returns a new handle, or 0 on failure (the host keeps the
 * message; return PTX_ERROR from the plugin function). Handles live until the end of the step. */
typedef struct PtxTensorOps {
    uint32_t struct_size;
    void *ctx;
    PtxHandle (*unary)(void *ctx, uint32_t op, PtxHandle a);
    PtxHandle (*binary)(void *ctx, uint32_t op, PtxHandle a, PtxHandle b);
    PtxHandle (*scalar)(void *ctx, uint32_t op, PtxHandle a, double s);
    PtxHandle (*reduce)(void *ctx, uint32_t op, PtxHandle a, int32_t axis);
    PtxHandle (*axis_op)(void *ctx, uint32_t op, PtxHandle a, int32_t axis, double param);
    PtxHandle (*slice)(void *ctx, PtxHandle a, int32_t axis, size_t start, size_t end);
    PtxHandle (*concat)(void *ctx, PtxHandle a, PtxHandle b, int32_t axis);
    PtxHandle (*cross_entropy)(void *ctx, PtxHandle logits, const uint32_t *labels, size_t n);
    PtxHandle (*constant)(void *ctx, const float *data, size_t rows, size_t cols);
    PtxHandle (*full)(void *ctx, double value, size_t rows, size_t cols);
    PtxHandle (*eye)(void *ctx, size_t n);
    int32_t (*shape)(void *ctx, PtxHandle a, size_t *rows, size_t *cols);
    int32_t (*read)(void *ctx, PtxHandle a, float *out, size_t len);
    int32_t (*report)(void *ctx, PtxStr name, PtxHandle a);
    PtxHandle (*state_get)(void *ctx, PtxStr key);
    int32_t (*state_set)(void *ctx, PtxStr key, PtxHandle a);
    void (*release)(void *ctx, PtxHandle a);
    /* Appended in 0.1.0+engine-3: check struct_size before calling. Top-1 accuracy of
     * logits (n, c) against labels[0..n], a (1, 1) tensor without gradient, computed on the
     * device. */
    PtxHandle (*accuracy)(void *ctx, PtxHandle logits, const uint32_t *labels, size_t n);
    /* ABI v2: the objective's trainable tensor name (declared through param_decl): teacher = 0
     * the student's copy (gradients flow into it), 1 the EMA teacher's (no gradient). */
    PtxHandle (*param)(void *ctx, PtxStr name, uint32_t teacher);
} PtxTensorOps;

typedef struct PtxObjectiveEntry {
    PtxStr name;       /* objective = { plugin = "<name>" } */
    PtxStr summary;    /* one line */
    PtxStr params_doc; /* Markdown table of the parameters */
    int32_t (*create)(const PtxHost *host, const PtxParam *params, size_t n_params, void **out);
    int32_t (*needs)(void *inst, const PtxHost *host, PtxObjectiveNeeds *out);
    int32_t (*loss)(void *inst, const PtxHost *host, const PtxTensorOps *ops,
                    const PtxObjectiveInputs *inputs, PtxHandle *out);
    /* ABI v2: describe trainable tensor index (0 .. n_params-1 of needs) in out. */
    int32_t (*param_decl)(void *inst, const PtxHost *host, uint32_t index, PtxParamDecl *out);
    void (*destroy)(void *inst);
} PtxObjectiveEntry;

/* ------------------------------------------------------------------------------------------
 * Augmentations */

#define PTX_DTYPE_F32 0u
#define PTX_DTYPE_U8 1u
#define PTX_DTYPE_U32 2u

#define PTX_MODALITY_IMAGE 1u
#define PTX_MODALITY_TOKENS 2u

/* A dense buffer. Images: PTX_DTYPE_F32, rank 3, shape (channels, height, width), values in
 * [0, 1], channel-major. Token sequences: PTX_DTYPE_U32, rank 2, shape (length, vocabulary
 * size); data holds `length` ids (the second dimension is the vocabulary, not data). */
typedef struct PtxBuffer {
    uint32_t dtype;
    uint32_t rank;
    uint32_t shape[4];
    void *data;
} PtxBuffer;

/* Token ids shared by every pretext tokenizer (pretext_plugin::tokens in the Rust SDK).
 * Learned tokens are PTX_TOKEN_SPECIAL .. vocabulary size - 1. */
#define PTX_TOKEN_PAD 0u
#define PTX_TOKEN_UNK 1u
#define PTX_TOKEN_CLS 2u
#define PTX_TOKEN_SEP 3u
#define PTX_TOKEN_MASK 4u
#define PTX_TOKEN_SPECIAL 5u
/* Flag on an output id: predict the original token at this position; the low 31 bits are
 * what the encoder sees. Keep the flags that arrive in the input where they are. */
#define PTX_TOKEN_TARGET 0x80000000u

typedef struct PtxAugmentEntry {
    PtxStr name; /* views = [["<name>"]] */
    PtxStr summary;
    PtxStr params_doc;
    uint32_t modality; /* PTX_MODALITY_IMAGE, or PTX_MODALITY_TOKENS for token sequences */
    int32_t (*create)(const PtxHost *host, const PtxParam *params, size_t n_params, void **out);
    /* Write the output's rank and shape for an input shape (data is not touched). */
    int32_t (*output_shape)(void *inst, const PtxHost *host, const PtxBuffer *input,
                            PtxBuffer *out);
    /* Transform input into the host-allocated output. Called from several threads at once;
     * all randomness must derive from seed. */
    int32_t (*apply)(void *inst, const PtxHost *host, uint64_t seed, const PtxBuffer *input,
                     PtxBuffer *output);
    void (*destroy)(void *inst);
} PtxAugmentEntry;

#ifdef __cplusplus
}
#endif

#endif /* PRETEXT_PLUGIN_H */
