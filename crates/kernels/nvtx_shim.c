/* crates/kernels/nvtx_shim.c: NVTX ranges for Nsight Systems, without linking anything.
 *
 * NVTX v3 is header-only: the first call looks for the tool named by NVTX_INJECTION64_PATH (set by
 * `nsys profile`) and, without one, every later call is a no-op through a function pointer. build.rs
 * compiles this file with -DLMAS_HAVE_NVTX3 when the CUDA include directory has nvtx3/ (the nvidia-nvtx
 * wheel of tools/install_cuda.sh); otherwise the functions are empty and lmas_nvtx_available() says so.
 * Rust side: src/backend/cuda/nvtx.rs.
 */
#ifdef LMAS_HAVE_NVTX3
#include <nvtx3/nvToolsExt.h>

int lmas_nvtx_available(void) { return 1; }
void lmas_nvtx_push(const char* name) { nvtxRangePushA(name); }
void lmas_nvtx_pop(void) { nvtxRangePop(); }
#else
int lmas_nvtx_available(void) { return 0; }
void lmas_nvtx_push(const char* name) { (void)name; }
void lmas_nvtx_pop(void) {}
#endif
