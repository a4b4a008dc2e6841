/* crates/kernels/cuda/emu/layout.cpp: sizes, field offsets and constants of crates/kernels/cuda/params.h as the C compiler sees
 * them, for the Rust test that keeps crates/kernels/src/params.rs (the #[repr(C)] mirror) identical.
 * Add a line here for every struct, field and constant added to params.h.
 */
#include <stddef.h>

#include "../params.h"
#include "emu_api.h"

#define S(T) {#T, "", sizeof(T), alignof(T)}
#define F(T, f) {#T, #f, offsetof(T, f), sizeof(((T*)0)->f)}
#define C(name) {"const", #name, (uint64_t)(name), 0}

static const LmasLayoutEntry kTable[] = {
    C(LMAS_RMSNORM_THREADS), C(LMAS_QK_THREADS), C(LMAS_ATTN_THREADS), C(LMAS_ATTN_BK), C(LMAS_ATTN_QB),
    C(LMAS_ATTN_QW), C(LMAS_MAX_HEAD_DIM), C(LMAS_DECODE_CHUNK), C(LMAS_STREAM_THREADS), C(LMAS_LATENT_THREADS),
    C(LMAS_LATENT_MAX_ROWS), C(LMAS_SAMPLE_THREADS), C(LMAS_MAX_LAUNCHES), C(LMAS_PLAN_ERROR_LEN),
    C(LMAS_EMU_MESSAGE_LEN),

    S(LmasLaunch), F(LmasLaunch, kernel), F(LmasLaunch, grid), F(LmasLaunch, block), F(LmasLaunch, shared_bytes),
    S(LmasPlan), F(LmasPlan, n_launches), F(LmasPlan, launches), F(LmasPlan, workspace_bytes), F(LmasPlan, error),
    S(LmasRow), F(LmasRow, q_start), F(LmasRow, q_len), F(LmasRow, slot_base), F(LmasRow, past_len),
    F(LmasRow, pos_base),

    S(LmasRmsNormParams), F(LmasRmsNormParams, x), F(LmasRmsNormParams, weight), F(LmasRmsNormParams, out),
    F(LmasRmsNormParams, rows), F(LmasRmsNormParams, dim), F(LmasRmsNormParams, eps),

    S(LmasAddRmsNormParams), F(LmasAddRmsNormParams, residual), F(LmasAddRmsNormParams, delta),
    F(LmasAddRmsNormParams, weight), F(LmasAddRmsNormParams, out), F(LmasAddRmsNormParams, rows),
    F(LmasAddRmsNormParams, dim), F(LmasAddRmsNormParams, eps),

    S(LmasQkNormRopeParams), F(LmasQkNormRopeParams, qkv), F(LmasQkNormRopeParams, q_norm),
    F(LmasQkNormRopeParams, k_norm), F(LmasQkNormRopeParams, inv_freq), F(LmasQkNormRopeParams, k_cache),
    F(LmasQkNormRopeParams, v_cache), F(LmasQkNormRopeParams, rows), F(LmasQkNormRopeParams, n_rows),
    F(LmasQkNormRopeParams, n_tokens), F(LmasQkNormRopeParams, n_heads), F(LmasQkNormRopeParams, n_kv_heads),
    F(LmasQkNormRopeParams, head_dim), F(LmasQkNormRopeParams, n_slots), F(LmasQkNormRopeParams, eps),

    S(LmasAttnParams), F(LmasAttnParams, q), F(LmasAttnParams, k_cache), F(LmasAttnParams, v_cache),
    F(LmasAttnParams, out), F(LmasAttnParams, rows), F(LmasAttnParams, workspace), F(LmasAttnParams, n_rows),
    F(LmasAttnParams, n_tokens), F(LmasAttnParams, n_heads), F(LmasAttnParams, n_kv_heads),
    F(LmasAttnParams, head_dim), F(LmasAttnParams, q_stride), F(LmasAttnParams, max_q_len),
    F(LmasAttnParams, max_kv_len), F(LmasAttnParams, scale),

    S(LmasSwigluParams), F(LmasSwigluParams, gate_up), F(LmasSwigluParams, out), F(LmasSwigluParams, n),
    F(LmasSwigluParams, inter),

    S(LmasEmbedParams), F(LmasEmbedParams, ids), F(LmasEmbedParams, out_rows), F(LmasEmbedParams, table),
    F(LmasEmbedParams, out), F(LmasEmbedParams, n), F(LmasEmbedParams, dim), F(LmasEmbedParams, vocab),

    S(LmasLatentParams), F(LmasLatentParams, h), F(LmasLatentParams, in_rows), F(LmasLatentParams, w_a_t),
    F(LmasLatentParams, out), F(LmasLatentParams, out_rows), F(LmasLatentParams, workspace),
    F(LmasLatentParams, n_rows), F(LmasLatentParams, dim), F(LmasLatentParams, target_norm),

    S(LmasSpliceOp), F(LmasSpliceOp, src), F(LmasSpliceOp, dst), F(LmasSpliceOp, len),
    S(LmasSpliceParams), F(LmasSpliceParams, kv), F(LmasSpliceParams, ops), F(LmasSpliceParams, n_ops),
    F(LmasSpliceParams, n_layers), F(LmasSpliceParams, n_slots), F(LmasSpliceParams, kv_width),

    S(LmasArgmaxParams), F(LmasArgmaxParams, logits), F(LmasArgmaxParams, out), F(LmasArgmaxParams, n_rows),
    F(LmasArgmaxParams, stride), F(LmasArgmaxParams, vocab_limit),

    S(LmasSampleParams), F(LmasSampleParams, logits), F(LmasSampleParams, uniform), F(LmasSampleParams, out),
    F(LmasSampleParams, n_rows), F(LmasSampleParams, stride), F(LmasSampleParams, vocab_limit),
    F(LmasSampleParams, top_k), F(LmasSampleParams, temperature), F(LmasSampleParams, top_p),

    S(LmasEmuOptions), F(LmasEmuOptions, mode), F(LmasEmuOptions, schedule),
    S(LmasEmuError), F(LmasEmuError, code), F(LmasEmuError, mode_used), F(LmasEmuError, message),
    S(LmasEmuTestParams), F(LmasEmuTestParams, out), F(LmasEmuTestParams, variant),
};

extern "C" const LmasLayoutEntry* lmas_layout_table(uint32_t* count) {
    *count = (uint32_t)(sizeof(kTable) / sizeof(kTable[0]));
    return kTable;
}
