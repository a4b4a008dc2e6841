/* In-place KV splice: moves token ranges inside the shared buffer, every layer, K and V.
 *
 * Buffer [layer][K|V][slot][kv_width] bf16. Op k moves slots [src, src + len) to [dst, dst + len) with
 * memmove semantics (ranges may overlap); ops run in order, so a list of moves can compact a row (the
 * parallel topology's experts) in one launch.
 *
 * How overlap is handled without a scratch copy or a grid-wide barrier: the data splits into independent
 * COLUMNS, one per (plane = layer*2 + K|V, 16-byte chunk of a slot's kv_width), and a move only ever moves
 * data within a column. Each thread owns whole columns and walks their slots in the safe direction
 * (descending when dst > src, ascending otherwise), 4 slots per step (4 loads, then 4 stores), for every op
 * in order. No two threads touch the same bytes, so no ordering between threads is needed. A warp covers
 * 32 consecutive chunks of one slot: 512 contiguous bytes per load/store instruction. kv_width % 8 != 0 (or
 * a misaligned buffer) falls back to 2-byte columns.
 *
 * Build: part of the fatbin (build.rs) and the emulation library; `cargo test --test kernels_emu splice`.
 */
#include "common.cuh"

// ----------------------------------------------------------------------------------------------------------
// CPU reference: src/kv.rs (KvBuffer::splice, copy_within per plane).
// ----------------------------------------------------------------------------------------------------------

// ----------------------------------------------------------------------------------------------------------
// kernels
// ----------------------------------------------------------------------------------------------------------

namespace splice_impl {
constexpr unsigned kMaxBlocks = 1024;
constexpr int kUnroll = 4;

/* Moves `len` elements of type T (one column cell per slot, `pitch` T between slots) in the safe order. */
template <class T>
__device__ __forceinline__ void move_column(T* col, size_t pitch, unsigned src, unsigned dst, unsigned len) {
    if (src == dst || len == 0) return;
    if (dst > src) {
        unsigned i = len;  // descending: slots len-1 .. 0
        while (i >= (unsigned)kUnroll) {
            T v[kUnroll];
#pragma unroll
            for (int u = 0; u < kUnroll; u++) v[u] = col[(size_t)(src + i - 1 - u) * pitch];
#pragma unroll
            for (int u = 0; u < kUnroll; u++) col[(size_t)(dst + i - 1 - u) * pitch] = v[u];
            i -= kUnroll;
        }
        while (i > 0) {
            i--;
            col[(size_t)(dst + i) * pitch] = col[(size_t)(src + i) * pitch];
        }
    } else {
        unsigned i = 0;  // ascending
        while (i + kUnroll <= len) {
            T v[kUnroll];
#pragma unroll
            for (int u = 0; u < kUnroll; u++) v[u] = col[(size_t)(src + i + u) * pitch];
#pragma unroll
            for (int u = 0; u < kUnroll; u++) col[(size_t)(dst + i + u) * pitch] = v[u];
            i += kUnroll;
        }
        for (; i < len; i++) col[(size_t)(dst + i) * pitch] = col[(size_t)(src + i) * pitch];
    }
}
}  // namespace splice_impl

extern "C" __global__ void __launch_bounds__(LMAS_STREAM_THREADS) latentmas_kv_splice(const LmasSpliceParams p) {
    using namespace splice_impl;
    const bool vec = p.kv_width % 8 == 0 && lmas::aligned16(p.kv);
    const unsigned per_slot = vec ? p.kv_width / 8 : p.kv_width;  // columns per plane
    const size_t planes = (size_t)p.n_layers * 2;
    const size_t columns = planes * per_slot;
    const size_t plane_elems = (size_t)p.n_slots * p.kv_width;
    for (size_t col = (size_t)blockIdx.x * blockDim.x + threadIdx.x; col < columns;
         col += (size_t)gridDim.x * blockDim.x) {
        const size_t plane = col / per_slot, c = col % per_slot;
        bf16* base = p.kv + plane * plane_elems;
        for (unsigned k = 0; k < p.n_ops; k++) {
            const LmasSpliceOp op = p.ops[k];
            if ((uint64_t)op.src + op.len > p.n_slots || (uint64_t)op.dst + op.len > p.n_slots) continue;
            if (vec) {
                move_column(reinterpret_cast<uint4*>(base) + c, p.kv_width / 8, op.src, op.dst, op.len);
            } else {
                move_column(reinterpret_cast<unsigned short*>(base) + c, p.kv_width, op.src, op.dst, op.len);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------------
// launchers
// ----------------------------------------------------------------------------------------------------------

extern "C" void lmas_plan_kv_splice(const LmasSpliceParams* p, LmasPlan* plan) {
    if (p->kv_width == 0) LMAS_PLAN_FAIL(plan, "latentmas_kv_splice: kv_width must be > 0");
    if (p->n_ops == 0 || p->n_layers == 0) return;
    const size_t columns = (size_t)p->n_layers * 2 * (p->kv_width % 8 == 0 ? p->kv_width / 8 : p->kv_width);
    size_t blocks = (columns + LMAS_STREAM_THREADS - 1) / LMAS_STREAM_THREADS;
    if (blocks > splice_impl::kMaxBlocks) blocks = splice_impl::kMaxBlocks;
    plan->n_launches = 1;
    plan->launches[0] = LmasLaunch{"latentmas_kv_splice", {(uint32_t)blocks, 1, 1}, {LMAS_STREAM_THREADS, 1, 1}, 0, 0};
}

LMAS_EMU_ENTRY(kv_splice, LmasSpliceParams, LMAS_KERNEL(latentmas_kv_splice))
