/* Embedding gather: out[out_rows ? out_rows[i] : i] = table[ids[i]] for i < n.
 *
 * One block of 256 threads per id; 16-byte copies when dim % 8 == 0 and the buffers are 16-byte aligned,
 * else element copies. An id >= vocab writes a zero row (the host validates ids before uploading them; the
 * kernel only guarantees it never reads outside the table). `out_rows` lets token rows land between the
 * latent rows of the same input-embedding buffer.
 *
 * Build: part of the fatbin (build.rs) and the emulation library; `cargo test --test kernels_emu embed`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: a row copy; the twin is written out in tests/kernels_emu.rs (embed_twin).
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(LMAS_STREAM_THREADS) latentmas_embed(const LmasEmbedParams p) {
    const unsigned i = blockIdx.x;
    const unsigned id = p.ids[i];
    const size_t dst_row = p.out_rows ? p.out_rows[i] : i;
    bf16* dst = p.out + dst_row * p.dim;
    const bool in_range = id < p.vocab;
    const bf16* src = p.table + (size_t)(in_range ? id : 0) * p.dim;
    const bool vec = p.dim % 8 == 0 && lmas::aligned16(p.table) && lmas::aligned16(p.out);
    if (vec) {
        for (unsigned c = threadIdx.x * 8; c < p.dim; c += LMAS_STREAM_THREADS * 8) {
            const uint4 v = in_range ? *reinterpret_cast<const uint4*>(src + c) : make_uint4(0, 0, 0, 0);
            *reinterpret_cast<uint4*>(dst + c) = v;
        }
    } else {
        for (unsigned c = threadIdx.x; c < p.dim; c += LMAS_STREAM_THREADS) {
            dst[c] = in_range ? src[c] : __ushort_as_bfloat16(0);
        }
    }
}

// ----------------------------------------------------------------------------------------------------------
// launchers
// ----------------------------------------------------------------------------------------------------------

extern "C" void lmas_plan_embed(const LmasEmbedParams* p, LmasPlan* plan) {
    if (p->dim == 0) LMAS_PLAN_FAIL(plan, "latentmas_embed: dim must be > 0");
    if (p->n == 0) return;
    if (p->n > 0x7fffffffu) LMAS_PLAN_FAIL(plan, "latentmas_embed: %u ids exceed the grid", p->n);
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{"latentmas_embed", {p->n, 1, 1}, {LMAS_STREAM_THREADS, 1, 1}, 0, 0};
}

LMAS_EMU_ENTRY(embed, LmasEmbedParams, LMAS_KERNEL(latentmas_embed))
