//! The cpu backend: the reference implementation of every op of the forward pass, in f32, multi-threaded
//! with rayon. Each function here is also the twin that the CUDA kernel of the same name is tested against.
//!
//! Ops: [`matmul::matmul`] (f32/bf16 weights), [`norm::rms_norm`], [`norm::add_rms_norm`],
//! [`rope`] (half-split RoPE), [`qk::qk_norm_rope_write_kv`], [`attention::attention`],
//! [`activation::swiglu`]; [`bf16_gemm::matmul_bf16`] (the bf16-activation matmul on AMX, AVX512-BF16
//! ([`avx512bf16`]), AVX-512, AVX2 or portable kernels); [`prefill_attention::attention_rows`] (the blocked attention of the
//! bf16-activation prefill).

pub mod activation;
pub mod amx;
pub mod attention;
pub mod avx512bf16;
pub mod bf16_gemm;
pub mod cache_size;
pub mod decode_attention;
pub mod matmul;
pub mod mem;
pub mod norm;
pub mod ops;
pub mod prefill_attention;
pub mod probe;
pub mod qk;
pub mod regions;
pub mod rope;
pub mod vexp;

pub use regions::parallel_regions;
