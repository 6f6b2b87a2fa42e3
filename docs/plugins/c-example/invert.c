/*
 * A pretext plugin in C: one augmentation, `invert`, which replaces every value v by
 * 1 - v with probability p (parameter `p`, default 0.5).
 *
 *   cc -shared -fPIC -O2 -I.. -o libinvert.so invert.c
 *   pretext plugins --plugin-dir .
 *
 * See docs/plugins/abi.md.
 */
#include <stdlib.h>
#include <string.h>

#include "pretext_plugin.h"

#define STR(s) ((PtxStr){(const uint8_t *)(s), sizeof(s) - 1})

typedef struct {
    double p;
} Invert;

static void fail(const PtxHost *host, const char *msg) {
    host->set_error(host->ctx, (PtxStr){(const uint8_t *)msg, strlen(msg)});
}

static int key_is(PtxStr key, const char *name) {
    return key.len == strlen(name) && memcmp(key.ptr, name, key.len) == 0;
}

static int32_t invert_create(const PtxHost *host, const PtxParam *params, size_t n,
                             void **out) {
    Invert *inv = malloc(sizeof *inv);
    if (!inv) {
        fail(host, "invert: out of memory");
        return PTX_ERROR;
    }
    inv->p = 0.5;
    for (size_t i = 0; i < n; i++) {
        const PtxParam *prm = &params[i];
        if (key_is(prm->key, "p") && (prm->kind == PTX_PARAM_FLOAT || prm->kind == PTX_PARAM_INT)) {
            inv->p = prm->kind == PTX_PARAM_FLOAT ? prm->f : (double)prm->i;
            if (!(inv->p >= 0.0 && inv->p <= 1.0)) {
                free(inv);
                fail(host, "invert: parameter `p` must be between 0 and 1");
                return PTX_ERROR;
            }
        } else {
            free(inv);
            fail(host, "invert: unknown parameter (it takes `p`, a number)");
            return PTX_ERROR;
        }
    }
    *out = inv;
    return PTX_OK;
}

static int32_t invert_output_shape(void *inst, const PtxHost *host, const PtxBuffer *input,
                                   PtxBuffer *out) {
    (void)inst;
    (void)host;
    out->rank = input->rank;
    memcpy(out->shape, input->shape, sizeof out->shape);
    return PTX_OK;
}

/* SplitMix64: one 64-bit draw from the seed is all this augmentation needs. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int32_t invert_apply(void *inst, const PtxHost *host, uint64_t seed,
                            const PtxBuffer *input, PtxBuffer *output) {
    const Invert *inv = inst;
    if (input->dtype != PTX_DTYPE_F32 || input->rank != 3) {
        fail(host, "invert: expected an f32 image (c, h, w)");
        return PTX_ERROR;
    }
    size_t n = (size_t)input->shape[0] * input->shape[1] * input->shape[2];
    const float *in = input->data;
    float *out = output->data;
    uint64_t state = seed;
    double u = (double)(splitmix64(&state) >> 11) / 9007199254740992.0; /* [0, 1) */
    int apply = u < inv->p;
    for (size_t i = 0; i < n; i++) {
        out[i] = apply ? 1.0f - in[i] : in[i];
    }
    return PTX_OK;
}

static void invert_destroy(void *inst) { free(inst); }

static const PtxAugmentEntry AUGMENTATIONS[] = {{
    .name = STR("invert"),
    .summary = STR("replace every value v by 1 - v, with probability p (C example)"),
    .params_doc = STR("| key | type | default | meaning |\n|---|---|---|---|\n"
                      "| `p` | float in [0, 1] | 0.5 | probability of inverting |\n"),
    .modality = PTX_MODALITY_IMAGE,
    .create = invert_create,
    .output_shape = invert_output_shape,
    .apply = invert_apply,
    .destroy = invert_destroy,
}};

static const PtxPluginInfo INFO = {
    .abi_version = PTX_ABI_VERSION,
    .struct_size = sizeof(PtxPluginInfo),
    .name = STR("invert-c"),
    .version = STR("0.1.0"),
    .sdk_version = STR("0.3.0"),
    .objectives = NULL,
    .n_objectives = 0,
    .augmentations = AUGMENTATIONS,
    .n_augmentations = 1,
};

const PtxPluginInfo *pretext_plugin_entry(void) { return &INFO; }
