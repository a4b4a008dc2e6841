//! cublasGemmEx against cases worked out by hand from the cuBLAS documentation: column-major storage
//! (element (i, j) at `i + j·ld`), op(A)/op(B), leading dimensions larger than the rows, alpha and beta,
//! beta = 0 never reading C, bf16 rounding of the output, and the status codes of bad arguments.

use std::ffi::c_void;

use half::bf16;

use crate::abi::*;
use crate::blas::*;
use crate::driver::*;
use crate::testing::*;

fn handle(stream: usize) -> usize {
    let mut h = 0usize;
    // SAFETY: valid out-pointer; the context is current.
    unsafe {
        assert_eq!(cublasCreate_v2(&mut h), CUBLAS_STATUS_SUCCESS);
        assert_eq!(cublasSetStream_v2(h, stream), CUBLAS_STATUS_SUCCESS);
    }
    h
}

#[derive(Clone, Copy)]
struct G {
    ta: u32,
    tb: u32,
    m: i32,
    n: i32,
    k: i32,
    a: u64,
    at: u32,
    lda: i32,
    b: u64,
    bt: u32,
    ldb: i32,
    c: u64,
    ct: u32,
    ldc: i32,
    alpha: f32,
    beta: f32,
    compute: u32,
}

fn gemm(h: usize, g: &G) -> BlasStatus {
    // SAFETY: device buffers from the test; alpha/beta are host floats (default pointer mode).
    unsafe {
        cublasGemmEx(
            h,
            g.ta,
            g.tb,
            g.m,
            g.n,
            g.k,
            &g.alpha as *const f32 as *const c_void,
            g.a as *const c_void,
            g.at,
            g.lda,
            g.b as *const c_void,
            g.bt,
            g.ldb,
            &g.beta as *const f32 as *const c_void,
            g.c as *mut c_void,
            g.ct,
            g.ldc,
            g.compute,
            -1,
        )
    }
}

fn dev_f32(v: &[f32]) -> u64 {
    let p = alloc(v.len() * 4);
    poke(p, v);
    p
}

/// A = [[1 2 3] [4 5 6]] (2×3), B = [[7 8] [9 10] [11 12]] (3×2): A·B = [[58 64] [139 154]].
fn base(s: usize) -> (usize, G) {
    let a = dev_f32(&[1., 4., 2., 5., 3., 6.]); // column-major, lda = 2
    let b = dev_f32(&[7., 9., 11., 8., 10., 12.]); // column-major, ldb = 3
    let c = alloc(4 * 4);
    let g = G {
        ta: CUBLAS_OP_N,
        tb: CUBLAS_OP_N,
        m: 2,
        n: 2,
        k: 3,
        a,
        at: CUDA_R_32F,
        lda: 2,
        b,
        bt: CUDA_R_32F,
        ldb: 3,
        c,
        ct: CUDA_R_32F,
        ldc: 2,
        alpha: 1.,
        beta: 0.,
        compute: CUBLAS_COMPUTE_32F,
    };
    (handle(s), g)
}

fn sync(s: usize) {
    // SAFETY: a live stream.
    ok(unsafe { cuStreamSynchronize(s) });
}

#[test]
fn column_major_product_runs_on_the_stream_and_beta_zero_ignores_nan() {
    let _serial = context();
    let s = stream(CU_STREAM_NON_BLOCKING);
    let (h, g) = base(s);
    assert_eq!(gemm(h, &g), CUBLAS_STATUS_SUCCESS);
    assert!(peek::<f32>(g.c, 4).iter().all(|x| x.is_nan()), "queued, not run, before the sync (C is poison)");
    sync(s);
    assert_eq!(peek::<f32>(g.c, 4), vec![58., 139., 64., 154.]);
}

#[test]
fn transposed_a_with_a_padded_leading_dimension() {
    let _serial = context();
    let s = stream(CU_STREAM_NON_BLOCKING);
    let (h, mut g) = base(s);
    // A stored as Aᵀ (3×2) with lda = 4: columns [1 2 3 pad] and [4 5 6 pad]; pads are NaN and never read
    g.a = dev_f32(&[1., 2., 3., f32::NAN, 4., 5., 6., f32::NAN]);
    g.ta = CUBLAS_OP_T;
    g.lda = 4;
    // C with ldc = 3: the third row of each column is not part of C and stays as it was
    g.c = dev_f32(&[-1.; 6]);
    g.ldc = 3;
    assert_eq!(gemm(h, &g), CUBLAS_STATUS_SUCCESS);
    sync(s);
    assert_eq!(peek::<f32>(g.c, 6), vec![58., 139., -1., 64., 154., -1.]);
}

#[test]
fn transposed_b_alpha_and_beta() {
    let _serial = context();
    let s = stream(CU_STREAM_NON_BLOCKING);
    let (h, mut g) = base(s);
    // B stored as Bᵀ (2×3, ldb = 2): rows of B become columns: [7 8], [9 10], [11 12]
    g.b = dev_f32(&[7., 8., 9., 10., 11., 12.]);
    g.tb = CUBLAS_OP_T;
    g.ldb = 2;
    g.c = dev_f32(&[1., 2., 3., 4.]);
    g.alpha = 2.;
    g.beta = -1.;
    assert_eq!(gemm(h, &g), CUBLAS_STATUS_SUCCESS);
    sync(s);
    assert_eq!(peek::<f32>(g.c, 4), vec![115., 276., 125., 304.]);
}

#[test]
fn bf16_inputs_with_bf16_output_round_to_nearest_even() {
    let _serial = context();
    let s = stream(CU_STREAM_NON_BLOCKING);
    let h = handle(s);
    // 1×1×2: 1·256 + 1·1 = 257, halfway between the bf16 neighbours 256 and 258: rounds to even (256);
    // 1·256 + 3·1 = 259 is halfway between 258 and 260 too: rounds to the even one (260)
    let bf = |v: &[f32]| {
        let p = alloc(v.len() * 2);
        poke(p, &v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect::<Vec<u16>>());
        p
    };
    let a = bf(&[1., 1., 1., 3.]); // A: 2×2 column-major [[1 1] [1 3]] (m = 2, k = 2)
    let b = bf(&[256., 1.]); // B: 2×1
    let c = alloc(4);
    let g = G {
        ta: CUBLAS_OP_N,
        tb: CUBLAS_OP_N,
        m: 2,
        n: 1,
        k: 2,
        a,
        at: CUDA_R_16BF,
        lda: 2,
        b,
        bt: CUDA_R_16BF,
        ldb: 2,
        c,
        ct: CUDA_R_16BF,
        ldc: 2,
        alpha: 1.,
        beta: 0.,
        compute: CUBLAS_COMPUTE_32F,
    };
    assert_eq!(gemm(h, &g), CUBLAS_STATUS_SUCCESS);
    sync(s);
    let out: Vec<f32> = peek::<u16>(c, 2).into_iter().map(|x| bf16::from_bits(x).to_f32()).collect();
    assert_eq!(out, vec![256., 260.]);
    // and f32 output of bf16 inputs is exact
    let c32 = alloc(8);
    let g32 = G { c: c32, ct: CUDA_R_32F, ..g };
    assert_eq!(gemm(h, &g32), CUBLAS_STATUS_SUCCESS);
    sync(s);
    assert_eq!(peek::<f32>(c32, 2), vec![257., 259.]);
}

#[test]
fn bad_arguments_return_the_documented_status() {
    let _serial = context();
    let s = stream(CU_STREAM_NON_BLOCKING);
    let (h, g) = base(s);
    let cases: Vec<(&str, G, BlasStatus)> = vec![
        ("lda < m with op N", G { lda: 1, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("lda < k with op T", G { ta: CUBLAS_OP_T, lda: 2, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("ldb < k with op N", G { ldb: 2, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("ldb < n with op T", G { tb: CUBLAS_OP_T, ldb: 1, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("ldc < m", G { ldc: 1, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("m < 0", G { m: -1, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("k < 0", G { k: -1, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("transa not N/T/C", G { ta: 7, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("unknown compute type", G { compute: 12345, ..g }, CUBLAS_STATUS_INVALID_VALUE),
        ("bf16 A with f16 B", G { at: CUDA_R_16BF, bt: CUDA_R_16F, ..g }, CUBLAS_STATUS_NOT_SUPPORTED),
        ("bf16 in, f16 out", G { at: CUDA_R_16BF, bt: CUDA_R_16BF, ct: CUDA_R_16F, ..g }, CUBLAS_STATUS_NOT_SUPPORTED),
        ("f32 in, bf16 out", G { ct: CUDA_R_16BF, ..g }, CUBLAS_STATUS_NOT_SUPPORTED),
        (
            "fast-bf16 compute on bf16 data",
            G { at: CUDA_R_16BF, bt: CUDA_R_16BF, ct: CUDA_R_16BF, compute: CUBLAS_COMPUTE_32F_FAST_16BF, ..g },
            CUBLAS_STATUS_NOT_SUPPORTED,
        ),
    ];
    for (what, case, want) in cases {
        assert_eq!(gemm(h, &case), want, "{what}");
    }
    // m = 0: a valid no-op that touches nothing
    assert_eq!(gemm(h, &G { m: 0, ..g }), CUBLAS_STATUS_SUCCESS);
    sync(s);
    assert!(peek::<f32>(g.c, 4).iter().all(|x| x.is_nan()));
    // SAFETY: valid handle, destroyed once, then used on purpose.
    unsafe {
        assert_eq!(cublasSetWorkspace_v2(h, (g.c + 4) as *mut c_void, 64), CUBLAS_STATUS_INVALID_VALUE, "unaligned");
        assert_eq!(cublasDestroy_v2(h), CUBLAS_STATUS_SUCCESS);
    }
    assert_eq!(gemm(h, &g), CUBLAS_STATUS_NOT_INITIALIZED, "destroyed handle");
}
