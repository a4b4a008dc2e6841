/* crates/kernels/cuda/params.h: the parameter structs of every kernel, shared by three compilers.
 *
 * - nvcc: each kernel takes ONE argument, its params struct, by value (`latentmas_x(const LmasXParams p)`);
 *   the cuda backend launches it through cudarc by pushing the struct's bytes as the only kernel argument.
 * - g++ (host emulation, crates/kernels/cuda/emu/): the same kernels run on the CPU, and the `lmas_plan_*` launch
 *   planners (host code at the end of each .cu file) give grid, block and shared memory for both routes.
 * - Rust: crates/kernels/src/params.rs mirrors every struct `#[repr(C)]`; a test compares sizes, field offsets and
 *   the constants below with the values this header gives the C compiler (lmas_layout_table()).
 *
 * Rules that keep the three views identical: fixed-width fields only, pointers are 8 bytes (Rust: u64 device
 * address), no bitfields, no enums as fields. A NULL pointer is 0.
 *
 * Shared-buffer vocabulary (src/kv.rs): the KV buffer is `[layer][K|V][slot][kv_head][head_dim]` bf16; a
 * kernel that touches one layer gets that layer's K and V planes, each `[n_slots, n_kv_heads, head_dim]`.
 * A call's new tokens are laid out token-major (row 0's tokens, then row 1's, ...), described by LmasRow.
 */
#ifndef LMAS_PARAMS_H
#define LMAS_PARAMS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* bf16 storage type; the definition comes from cuda_bf16.h (or the emulator's fallback). */
typedef struct __nv_bfloat16 lmas_bf16;

/* ------------------------------------------------------------------------------------------------------ */
/* Tunables. Each is a compile-time constant of the kernels; Rust mirrors them (crates/kernels/src/params.rs).     */
/* ------------------------------------------------------------------------------------------------------ */

/* RMSNorm: one block per row; 256 threads stream a row of up to a few thousand elements in 1-3 16-byte loads. */
#define LMAS_RMSNORM_THREADS 256
/* q/k norm + RoPE + KV write: one block per token, 4 warps share the token's H + 2*KVH heads. */
#define LMAS_QK_THREADS 128
/* Attention: 4 warps, each owning up to LMAS_ATTN_QW query vectors; 32 KV slots per shared-memory tile
 * (one slot per lane when scoring); up to 16 query vectors (tokens x heads of one KV head) per block. */
#define LMAS_ATTN_THREADS 128
#define LMAS_ATTN_BK 32
#define LMAS_ATTN_QB 16
#define LMAS_ATTN_QW 4
/* Largest head_dim the attention and q/k kernels accept (8 values per lane of a warp). */
#define LMAS_MAX_HEAD_DIM 256
/* Decode splits each row's KV into chunks of this many slots, one block per (chunk, row, kv head). */
#define LMAS_DECODE_CHUNK 256
/* SwiGLU / embedding / splice: plain streaming kernels. */
#define LMAS_STREAM_THREADS 256
/* Latent projection: 8 warps per block, one output feature per warp at a time; at most 8 rows per launch. */
#define LMAS_LATENT_THREADS 256
#define LMAS_LATENT_MAX_ROWS 8
/* Argmax / sampling: one block per row; each thread owns a contiguous segment of the vocabulary. */
#define LMAS_SAMPLE_THREADS 512

/* ------------------------------------------------------------------------------------------------------ */
/* Launch plans: what the host (cudarc or the emulator) launches for one op.                                */
/* ------------------------------------------------------------------------------------------------------ */

#define LMAS_MAX_LAUNCHES 2
#define LMAS_PLAN_ERROR_LEN 192

typedef struct LmasLaunch {
    /* Kernel symbol in the fatbin (a static string). */
    const char* kernel;
    uint32_t grid[3];
    uint32_t block[3];
    /* Dynamic shared memory in bytes (static __shared__ is not included). */
    uint32_t shared_bytes;
    uint32_t _pad;
} LmasLaunch;

typedef struct LmasPlan {
    /* Kernels to launch in order, each with the op's params struct as its only argument. 0 = nothing to do. */
    uint32_t n_launches;
    uint32_t _pad;
    LmasLaunch launches[LMAS_MAX_LAUNCHES];
    /* Bytes of scratch the op needs at `workspace` (0 if none). */
    uint64_t workspace_bytes;
    /* Empty string when the params are valid; otherwise why not (and no launch is planned). */
    char error[LMAS_PLAN_ERROR_LEN];
} LmasPlan;

/* ------------------------------------------------------------------------------------------------------ */
/* Rows of a batch                                                                                          */
/* ------------------------------------------------------------------------------------------------------ */

/* One row (question or parallel expert) of a forward call. Its j-th new token (j < q_len) is token
 * `q_start + j` of the call's activations, goes to KV slot `slot_base + past_len + j`, has RoPE position
 * `pos_base + past_len + j`, and sees slots [slot_base, slot_base + past_len + j + 1). Rows are sorted by
 * q_start and their tokens are contiguous: q_start(r+1) = q_start(r) + q_len(r). */
typedef struct LmasRow {
    uint32_t q_start;
    uint32_t q_len;
    uint32_t slot_base;
    uint32_t past_len;
    uint32_t pos_base;
    uint32_t _pad;
} LmasRow;

/* ------------------------------------------------------------------------------------------------------ */
/* Per-op params                                                                                            */
/* ------------------------------------------------------------------------------------------------------ */

/* out[r] = rmsnorm(x[r]) * weight, rows x dim. Kernel: latentmas_rmsnorm. */
typedef struct LmasRmsNormParams {
    const lmas_bf16* x;
    const lmas_bf16* weight;
    lmas_bf16* out;
    uint32_t rows;
    uint32_t dim;
    float eps;
    uint32_t _pad;
} LmasRmsNormParams;

/* residual[r] = bf16(residual[r] + delta[r]); out[r] = rmsnorm(residual[r]) * weight (from the stored, rounded
 * residual, as a bf16 model computes it). Kernel: latentmas_add_rmsnorm. */
typedef struct LmasAddRmsNormParams {
    lmas_bf16* residual;
    const lmas_bf16* delta;
    const lmas_bf16* weight;
    lmas_bf16* out;
    uint32_t rows;
    uint32_t dim;
    float eps;
    uint32_t _pad;
} LmasAddRmsNormParams;

/* For each new token of each row: the q heads of its fused qkv row [(H + 2*KVH) * d] are RMS-normalised
 * (q_norm) and rotated in place; its k heads are normalised (k_norm), rotated and written to its K slot; its
 * v heads are copied to its V slot. The k part of qkv is left as it was. Kernel: latentmas_qk_norm_rope_kv. */
typedef struct LmasQkNormRopeParams {
    lmas_bf16* qkv;              /* [n_tokens, (H + 2*KVH) * head_dim] */
    const lmas_bf16* q_norm;     /* [head_dim] */
    const lmas_bf16* k_norm;     /* [head_dim] */
    const float* inv_freq;       /* [head_dim / 2]: theta^(-2i/d), as src/backend/cpu/rope.rs computes it */
    lmas_bf16* k_cache;          /* this layer's K plane [n_slots, KVH, head_dim] */
    lmas_bf16* v_cache;          /* this layer's V plane */
    const LmasRow* rows;         /* [n_rows] */
    uint32_t n_rows;
    uint32_t n_tokens;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t head_dim;           /* even, <= LMAS_MAX_HEAD_DIM */
    uint32_t n_slots;            /* slots of the plane; writes past it are skipped (the host checks first) */
    float eps;
    uint32_t _pad;
} LmasQkNormRopeParams;

/* Causal GQA attention of each new token over its row's visible slots (LmasRow). q head h reads KV head
 * h / (H / KVH). Prefill (any q_len): latentmas_attn_prefill. Decode (every row q_len == 1):
 * latentmas_attn_decode_partial (split-KV, one block per chunk) then latentmas_attn_decode_merge
 * (log-sum-exp merge), with `workspace` of the plan's workspace_bytes. */
typedef struct LmasAttnParams {
    const lmas_bf16* q;          /* token t, head h at q + t * q_stride + h * head_dim */
    const lmas_bf16* k_cache;    /* this layer's K plane [n_slots, KVH, head_dim] */
    const lmas_bf16* v_cache;
    lmas_bf16* out;              /* [n_tokens, H, head_dim] */
    const LmasRow* rows;
    float* workspace;            /* decode only: partial outputs and (max, sum) per chunk */
    uint32_t n_rows;
    uint32_t n_tokens;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint32_t head_dim;           /* even, <= LMAS_MAX_HEAD_DIM */
    uint32_t q_stride;           /* elements between consecutive tokens of q (>= H * head_dim) */
    uint32_t max_q_len;          /* >= every row's q_len (sizes the prefill grid) */
    uint32_t max_kv_len;         /* >= every row's past_len + q_len (sizes the decode grid and workspace) */
    float scale;                 /* softmax scale, 1/sqrt(head_dim) */
    uint32_t _pad;
} LmasAttnParams;

/* out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]. Kernel: latentmas_swiglu. */
typedef struct LmasSwigluParams {
    const lmas_bf16* gate_up;    /* [n, 2 * inter] */
    lmas_bf16* out;              /* [n, inter] */
    uint32_t n;
    uint32_t inter;
} LmasSwigluParams;

/* out[out_rows ? out_rows[i] : i] = table[ids[i]]; an id >= vocab gives a zero row (the host validates ids
 * first; the kernel never reads outside the table). Kernel: latentmas_embed. */
typedef struct LmasEmbedParams {
    const uint32_t* ids;         /* [n] */
    const uint32_t* out_rows;    /* [n] or NULL */
    const lmas_bf16* table;      /* [vocab, dim] */
    lmas_bf16* out;              /* [>= max out row + 1, dim] */
    uint32_t n;
    uint32_t dim;
    uint32_t vocab;
    uint32_t _pad;
} LmasEmbedParams;

/* The latent step's input embedding, fused: for each row r,
 *   a = h[in_rows[r]] . W_a  (f32),  e = a / max(||a||, 1e-6) * target_norm,  out[out_rows[r]] = bf16(e).
 * W_a is passed TRANSPOSED, `w_a_t[j, i] = W_a[i, j]` ([out, in] row-major, like every nn.Linear weight),
 * so that each output feature is one contiguous dot product. `workspace` (plan.workspace_bytes) must be
 * zeroed ONCE when allocated: its first word is a block counter that every launch leaves at zero again.
 * Kernel: latentmas_latent_project. */
typedef struct LmasLatentParams {
    const lmas_bf16* h;          /* [*, dim] final-norm hidden states */
    const uint32_t* in_rows;     /* [n_rows] or NULL (row r reads h[r]) */
    const lmas_bf16* w_a_t;      /* [dim, dim] */
    lmas_bf16* out;              /* input-embedding buffer [*, dim] */
    const uint32_t* out_rows;    /* [n_rows] or NULL (row r writes out[r]) */
    float* workspace;
    uint32_t n_rows;             /* <= LMAS_LATENT_MAX_ROWS */
    uint32_t dim;
    float target_norm;
    uint32_t _pad;
} LmasLatentParams;

/* One token-range move inside the shared buffer: slots [src, src + len) -> [dst, dst + len), every layer,
 * K and V. Ranges may overlap (memmove semantics). */
typedef struct LmasSpliceOp {
    uint32_t src;
    uint32_t dst;
    uint32_t len;
} LmasSpliceOp;

/* Applies ops[0..n_ops) in order, in place. An op that does not fit in n_slots is skipped (the host checks
 * first). Kernel: latentmas_kv_splice. */
typedef struct LmasSpliceParams {
    lmas_bf16* kv;               /* the whole buffer [n_layers][2][n_slots][kv_width] */
    const LmasSpliceOp* ops;     /* [n_ops] */
    uint32_t n_ops;
    uint32_t n_layers;
    uint32_t n_slots;
    uint32_t kv_width;           /* n_kv_heads * head_dim */
} LmasSpliceParams;

/* out[r] = argmax of logits[r, 0..vocab_limit) (lowest id on ties). Kernel: latentmas_argmax. */
typedef struct LmasArgmaxParams {
    const float* logits;         /* [n_rows, stride] */
    uint32_t* out;               /* [n_rows] */
    uint32_t n_rows;
    uint32_t stride;
    uint32_t vocab_limit;        /* 1 <= vocab_limit <= stride */
    uint32_t _pad;
} LmasArgmaxParams;

/* Samples one id per row from logits[r, 0..vocab_limit): temperature -> top-k -> top-p, then inverse CDF in
 * id order at uniform[r] in [0, 1). temperature <= 0 is greedy (argmax). top_k == 0 or >= vocab_limit
 * disables top-k (ties with the k-th largest logit are kept). top_p >= 1 disables top-p; otherwise a token is
 * kept iff the probability mass of tokens strictly more probable than it is < top_p (ties kept together).
 * Kernel: latentmas_sample. */
typedef struct LmasSampleParams {
    const float* logits;         /* [n_rows, stride] */
    const float* uniform;        /* [n_rows] */
    uint32_t* out;               /* [n_rows] */
    uint32_t n_rows;
    uint32_t stride;
    uint32_t vocab_limit;
    uint32_t top_k;
    float temperature;
    float top_p;
} LmasSampleParams;

#ifdef __cplusplus
}
#endif

#endif /* LMAS_PARAMS_H */
