//! The exported cuBLAS API (`libcublas.so`), on the same driver state: handles with their stream,
//! workspace, pointer and math mode, and `cublasGemmEx` with the documented column-major semantics
//! (C = alpha·op(A)·op(B) + beta·C, element (i, j) of an ld-strided matrix at `i + j·ld`), argument
//! checks and status codes. The GEMM runs on the handle's stream like any other queued work, so it is
//! ordered, captured and replayed like a kernel.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use half::{bf16, f16};

use crate::abi::*;
use crate::state;
use crate::stream::Op;

/// A cuBLAS handle's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Handle {
    pub stream: usize,
    pub workspace: (usize, usize),
    pub pointer_mode: u32,
    pub math_mode: u32,
}

/// alpha or beta: read at the call (host pointer mode) or when the GEMM runs (device pointer mode).
#[derive(Debug, Clone, Copy)]
pub enum Scalar {
    Host(f32),
    Device(usize),
}

impl Scalar {
    fn get(&self) -> Result<f32, (CuResult, String)> {
        match *self {
            Scalar::Host(v) => Ok(v),
            Scalar::Device(p) => {
                crate::memory::check(p, 4).map_err(|b| {
                    (CUDA_ERROR_ILLEGAL_ADDRESS, format!("cublasGemmEx: device scalar at {p:#x} is {b}"))
                })?;
                // SAFETY: four bytes of live device memory (checked).
                Ok(unsafe { (p as *const f32).read_unaligned() })
            }
        }
    }
}

/// The element types this GEMM reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    F32,
    F16,
    Bf16,
}

impl Ty {
    fn from_cuda(t: u32) -> Option<Ty> {
        match t {
            CUDA_R_32F => Some(Ty::F32),
            CUDA_R_16F => Some(Ty::F16),
            CUDA_R_16BF => Some(Ty::Bf16),
            _ => None,
        }
    }
    fn size(self) -> usize {
        match self {
            Ty::F32 => 4,
            _ => 2,
        }
    }
    /// # Safety
    /// `p` points at a readable element of this type.
    unsafe fn load(self, p: usize) -> f32 {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                Ty::F32 => (p as *const f32).read_unaligned(),
                Ty::F16 => f16::from_bits((p as *const u16).read_unaligned()).to_f32(),
                Ty::Bf16 => bf16::from_bits((p as *const u16).read_unaligned()).to_f32(),
            }
        }
    }
    /// # Safety
    /// `p` points at a writable element of this type.
    unsafe fn store(self, p: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                Ty::F32 => (p as *mut f32).write_unaligned(v),
                Ty::F16 => (p as *mut u16).write_unaligned(f16::from_f32(v).to_bits()),
                Ty::Bf16 => (p as *mut u16).write_unaligned(bf16::from_f32(v).to_bits()),
            }
        }
    }
}

/// A checked `cublasGemmEx` call, queued.
#[derive(Debug, Clone)]
pub struct GemmCall {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: Scalar,
    pub a: usize,
    pub a_ty: Ty,
    pub lda: usize,
    pub b: usize,
    pub b_ty: Ty,
    pub ldb: usize,
    pub beta: Scalar,
    pub c: usize,
    pub c_ty: Ty,
    pub ldc: usize,
}

/// Bytes spanned by a `rows × cols` column-major matrix with leading dimension `ld`.
fn extent(rows: usize, cols: usize, ld: usize, ty: Ty) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (ld * (cols - 1) + rows) * ty.size()
    }
}

impl GemmCall {
    fn range(&self, what: &str, p: usize, bytes: usize) -> Result<(), (CuResult, String)> {
        if bytes == 0 {
            return Ok(());
        }
        crate::memory::check(p, bytes).map(|_| ()).map_err(|b| {
            (
                CUDA_ERROR_ILLEGAL_ADDRESS,
                format!("cublasGemmEx m={} n={} k={}: matrix {what} [{p:#x}, +{bytes}) is {b}", self.m, self.n, self.k),
            )
        })
    }

    /// C = alpha·op(A)·op(B) + beta·C with f32 accumulation; C is not read when beta = 0.
    pub fn run(&self) -> Result<(), (CuResult, String)> {
        let (m, n, k) = (self.m, self.n, self.k);
        let (ar, ac) = if self.trans_a { (k, m) } else { (m, k) };
        let (br, bc) = if self.trans_b { (n, k) } else { (k, n) };
        if k > 0 {
            self.range("A", self.a, extent(ar, ac, self.lda, self.a_ty))?;
            self.range("B", self.b, extent(br, bc, self.ldb, self.b_ty))?;
        }
        self.range("C", self.c, extent(m, n, self.ldc, self.c_ty))?;
        let (alpha, beta) = (self.alpha.get()?, self.beta.get()?);
        let at = |p: usize, ty: Ty, r: usize, c: usize, ld: usize| -> f32 {
            // SAFETY: (r, c) lies inside the matrix whose extent was checked above.
            unsafe { ty.load(p + (r + c * ld) * ty.size()) }
        };
        // op(A) as m rows of k and op(B)ᵀ as n rows of k, so each dot product reads two contiguous rows.
        let mut opa = vec![0f32; m * k];
        for i in 0..m {
            for l in 0..k {
                opa[i * k + l] = if self.trans_a {
                    at(self.a, self.a_ty, l, i, self.lda)
                } else {
                    at(self.a, self.a_ty, i, l, self.lda)
                };
            }
        }
        let mut opb = vec![0f32; n * k];
        for j in 0..n {
            for l in 0..k {
                opb[j * k + l] = if self.trans_b {
                    at(self.b, self.b_ty, j, l, self.ldb)
                } else {
                    at(self.b, self.b_ty, l, j, self.ldb)
                };
            }
        }
        for j in 0..n {
            let bj = &opb[j * k..(j + 1) * k];
            for i in 0..m {
                let ai = &opa[i * k..(i + 1) * k];
                let acc: f32 = ai.iter().zip(bj).map(|(x, y)| x * y).sum();
                let p = self.c + (i + j * self.ldc) * self.c_ty.size();
                let v = if beta == 0.0 {
                    alpha * acc
                } else {
                    // SAFETY: inside C (checked).
                    alpha * acc + beta * unsafe { self.c_ty.load(p) }
                };
                // SAFETY: inside C (checked).
                unsafe { self.c_ty.store(p, v) };
            }
        }
        Ok(())
    }
}

fn catch(f: impl FnOnce() -> Result<(), BlasStatus>) -> BlasStatus {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => CUBLAS_STATUS_SUCCESS,
        Ok(Err(e)) => e,
        Err(_) => CUBLAS_STATUS_EXECUTION_FAILED,
    }
}

fn with_handle<T>(h: usize, f: impl FnOnce(&mut Handle) -> Result<T, BlasStatus>) -> Result<T, BlasStatus> {
    let mut d = state::lock();
    let handle = d.blas.get_mut(&h).ok_or(CUBLAS_STATUS_NOT_INITIALIZED)?;
    f(handle)
}

macro_rules! export {
    ($($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block)*) => {
        $(
            $(#[$m])*
            #[no_mangle]
            pub unsafe extern "C" fn $name($($a: $t),*) -> BlasStatus {
                catch(|| $body)
            }
        )*
    };
}

fn write<T>(p: *mut T, v: T) -> Result<(), BlasStatus> {
    if p.is_null() {
        return Err(CUBLAS_STATUS_INVALID_VALUE);
    }
    // SAFETY: non-null output pointer from the caller (C API contract).
    unsafe { p.write(v) };
    Ok(())
}

/// GEMM algorithms cuBLAS accepts: CUBLAS_GEMM_DEFAULT (-1), ALGO0..23, DEFAULT_TENSOR_OP (99), ALGO0..15_TENSOR_OP.
fn algo_ok(a: c_int) -> bool {
    (-1..=23).contains(&a) || (99..=115).contains(&a)
}

#[allow(clippy::too_many_arguments)]
fn gemm_ex(
    handle: usize,
    transa: u32,
    transb: u32,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_ty: u32,
    lda: c_int,
    b: *const c_void,
    b_ty: u32,
    ldb: c_int,
    beta: *const c_void,
    c: *mut c_void,
    c_ty: u32,
    ldc: c_int,
    compute: u32,
    algo: c_int,
) -> Result<(), BlasStatus> {
    let h = with_handle(handle, |h| Ok(*h))?;
    let op = |t: u32| match t {
        CUBLAS_OP_N => Ok(false),
        CUBLAS_OP_T | CUBLAS_OP_C => Ok(true), // real types: conjugate transpose = transpose
        _ => Err(CUBLAS_STATUS_INVALID_VALUE),
    };
    let (ta, tb) = (op(transa)?, op(transb)?);
    if m < 0 || n < 0 || k < 0 || alpha.is_null() || beta.is_null() || !algo_ok(algo) {
        return Err(CUBLAS_STATUS_INVALID_VALUE);
    }
    if lda < (if ta { k } else { m }).max(1) || ldb < (if tb { n } else { k }).max(1) || ldc < m.max(1) {
        return Err(CUBLAS_STATUS_INVALID_VALUE);
    }
    let (Some(at), Some(bt), Some(ct)) = (Ty::from_cuda(a_ty), Ty::from_cuda(b_ty), Ty::from_cuda(c_ty)) else {
        return Err(CUBLAS_STATUS_NOT_SUPPORTED);
    };
    // cublasGemmEx's table of supported combinations (real types)
    let supported = match compute {
        CUBLAS_COMPUTE_32F => at == bt && (ct == at || ct == Ty::F32),
        CUBLAS_COMPUTE_32F_FAST_16F | CUBLAS_COMPUTE_32F_FAST_16BF | CUBLAS_COMPUTE_32F_FAST_TF32 => {
            at == Ty::F32 && bt == Ty::F32 && ct == Ty::F32
        }
        _ => return Err(CUBLAS_STATUS_INVALID_VALUE),
    };
    if !supported {
        return Err(CUBLAS_STATUS_NOT_SUPPORTED);
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let scalar = |p: *const c_void| {
        if h.pointer_mode == CUBLAS_POINTER_MODE_DEVICE {
            Scalar::Device(p as usize)
        } else {
            // SAFETY: host pointer mode: alpha/beta point at host floats (the compute type's scale type).
            Scalar::Host(unsafe { (p as *const f32).read_unaligned() })
        }
    };
    let call = GemmCall {
        trans_a: ta,
        trans_b: tb,
        m: m as usize,
        n: n as usize,
        k: k as usize,
        alpha: scalar(alpha),
        a: a as usize,
        a_ty: at,
        lda: lda as usize,
        b: b as usize,
        b_ty: bt,
        ldb: ldb as usize,
        beta: scalar(beta),
        c: c as usize,
        c_ty: ct,
        ldc: ldc as usize,
    };
    let d = state::lock();
    d.ready().map_err(|_| CUBLAS_STATUS_EXECUTION_FAILED)?;
    let s = d.stream(h.stream).map_err(|_| CUBLAS_STATUS_EXECUTION_FAILED)?;
    d.submit(&s, Op::Gemm(Arc::new(call))).map(|_| ()).map_err(|_| CUBLAS_STATUS_EXECUTION_FAILED)
}

export! {
    fn cublasCreate_v2(handle: *mut usize) {
        let mut d = state::lock();
        if handle.is_null() {
            return Err(CUBLAS_STATUS_INVALID_VALUE);
        }
        d.ready().map_err(|_| CUBLAS_STATUS_NOT_INITIALIZED)?;
        let h = d.handle();
        d.blas.insert(h, Handle::default());
        write(handle, h)
    }

    fn cublasDestroy_v2(handle: usize) {
        state::lock().blas.remove(&handle).map(|_| ()).ok_or(CUBLAS_STATUS_NOT_INITIALIZED)
    }

    fn cublasSetStream_v2(handle: usize, stream: usize) {
        with_handle(handle, |h| {
            h.stream = stream;
            // a new stream resets the user workspace to the default one (cublasSetStream docs)
            h.workspace = (0, 0);
            Ok(())
        })
    }

    fn cublasGetStream_v2(handle: usize, stream: *mut usize) {
        let s = with_handle(handle, |h| Ok(h.stream))?;
        write(stream, s)
    }

    fn cublasSetWorkspace_v2(handle: usize, ws: *mut c_void, bytes: usize) {
        with_handle(handle, |h| {
            if !(ws as usize).is_multiple_of(CUBLAS_WORKSPACE_ALIGN) {
                return Err(CUBLAS_STATUS_INVALID_VALUE);
            }
            h.workspace = (ws as usize, bytes);
            Ok(())
        })
    }

    fn cublasSetPointerMode_v2(handle: usize, mode: u32) {
        with_handle(handle, |h| {
            if mode > CUBLAS_POINTER_MODE_DEVICE {
                return Err(CUBLAS_STATUS_INVALID_VALUE);
            }
            h.pointer_mode = mode;
            Ok(())
        })
    }

    fn cublasGetPointerMode_v2(handle: usize, mode: *mut u32) {
        let m = with_handle(handle, |h| Ok(h.pointer_mode))?;
        write(mode, m)
    }

    fn cublasSetMathMode(handle: usize, mode: u32) {
        with_handle(handle, |h| {
            h.math_mode = mode;
            Ok(())
        })
    }

    fn cublasGetMathMode(handle: usize, mode: *mut u32) {
        let m = with_handle(handle, |h| Ok(h.math_mode))?;
        write(mode, m)
    }

    #[allow(clippy::too_many_arguments)]
    fn cublasGemmEx(
        handle: usize,
        transa: u32,
        transb: u32,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: *const c_void,
        a: *const c_void,
        a_ty: u32,
        lda: c_int,
        b: *const c_void,
        b_ty: u32,
        ldb: c_int,
        beta: *const c_void,
        c: *mut c_void,
        c_ty: u32,
        ldc: c_int,
        compute: u32,
        algo: c_int,
    ) {
        gemm_ex(handle, transa, transb, m, n, k, alpha, a, a_ty, lda, b, b_ty, ldb, beta, c, c_ty, ldc, compute, algo)
    }
}

const STATUS: &[(BlasStatus, &str, &str)] = &[
    (CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS\0", "success\0"),
    (CUBLAS_STATUS_NOT_INITIALIZED, "CUBLAS_STATUS_NOT_INITIALIZED\0", "the library was not initialized\0"),
    (
        CUBLAS_STATUS_INVALID_VALUE,
        "CUBLAS_STATUS_INVALID_VALUE\0",
        "an invalid numeric value was used as an argument\0",
    ),
    (CUBLAS_STATUS_EXECUTION_FAILED, "CUBLAS_STATUS_EXECUTION_FAILED\0", "the GPU program failed to execute\0"),
    (CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED\0", "the functionality requested is not supported\0"),
];

fn status_text(s: BlasStatus, name: bool) -> *const c_char {
    match STATUS.iter().find(|e| e.0 == s) {
        Some(e) => (if name { e.1 } else { e.2 }).as_ptr() as *const c_char,
        None => c"unknown cuBLAS status".as_ptr(),
    }
}

#[no_mangle]
pub extern "C" fn cublasGetStatusName(s: BlasStatus) -> *const c_char {
    status_text(s, true)
}

#[no_mangle]
pub extern "C" fn cublasGetStatusString(s: BlasStatus) -> *const c_char {
    status_text(s, false)
}
