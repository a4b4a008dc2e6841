/*
 * latentmas.h: the C ABI of latentmas (LatentMAS, multi-agent reasoning in latent space, on a Qwen3 engine).
 *
 * Hand-written; the Rust side is crates/capi/src/. crates/capi/tests/ffi.rs fails when the two drift apart (prototypes, struct
 * layouts, status codes, exported symbols).
 *
 * Build and link (flags for this checkout: `latentmas-ffi-flags`):
 *     cargo build --release
 *     cc prog.c -I ffi target/release/liblatentmas.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o prog
 * or against the shared library:
 *     cc prog.c -I ffi -L target/release -llatentmas -Wl,-rpath,$PWD/target/release -o prog
 *
 * Usage (see ffi/examples/run.c):
 *     lm_engine_params ep = lm_engine_default_params();
 *     ep.model = "Qwen/Qwen3-0.6B";                 // or a local directory
 *     lm_engine *engine;
 *     if (lm_engine_open(&ep, &engine) != LM_OK) { fprintf(stderr, "%s\n", lm_last_error()); ... }
 *     lm_run_params rp = lm_run_default_params();
 *     lm_result *r;
 *     if (lm_run(engine, "What is 12 + 30?", &rp, &r) == LM_OK) {
 *         puts(lm_result_text(r));
 *         lm_result_free(r);
 *     }
 *     lm_engine_free(engine);
 *
 * STRINGS. Every string in and out is UTF-8 and NUL-terminated. Strings passed in are only read during the call
 * (the library copies what it keeps). Invalid UTF-8 is LM_ERR_INVALID_UTF8. A NUL inside generated text (which
 * C strings cannot carry) comes out as U+FFFD.
 *
 * OWNERSHIP. The caller owns what it passes in. The library owns:
 *   - lm_engine: from lm_engine_open; free it with lm_engine_free.
 *   - lm_result: from lm_run; free it with lm_result_free. It does not depend on its engine: it may outlive it.
 *   - the strings lm_result_text / _answer / _json return: owned by the result, valid until lm_result_free on it.
 *     Never free() them.
 *   - lm_last_error's string: valid until the next call on this thread that can fail (see ERRORS).
 *   - lm_status_name / lm_version strings and the default params' strings: static, never freed.
 * Freeing NULL is a no-op.
 *
 * HANDLES. lm_engine * and lm_result * are opaque tokens, not addresses: the library looks them up in a table
 * of live handles and never dereferences them, and never issues the same value twice in a process. So a double
 * free, a use after free, a handle of the other kind (an lm_result * cast to lm_engine *) or a pointer that
 * never came from the library is detected: LM_ERR_INVALID_HANDLE, never a crash. The one undetectable case: a
 * garbage value that happens to equal a live handle of the same kind.
 * Other pointers (params, strings, out-parameters) are checked for NULL and alignment only; beyond that they
 * must point to valid memory of their type, which no library can check.
 *
 * ERRORS. Functions returning int return LM_OK (0) or a negative lm_status. Every function that can fail first
 * clears this thread's last error, and on failure records its code and a message naming the function and the
 * offending argument or field. So after such a call, lm_last_error_code() == 0 if and only if it succeeded;
 * this is how failures of the void and pointer-returning functions are seen (lm_result_answer returns NULL
 * both for "no answer", code 0, and for an invalid handle, code LM_ERR_INVALID_HANDLE). On failure,
 * out-parameters are set to NULL (when the out-parameter itself is not NULL). The functions that cannot fail
 * (the default params, lm_last_error, lm_last_error_code, lm_status_name, lm_version) leave the last error
 * alone, so printf("%s: %s", lm_status_name(rc), lm_last_error()) is safe in either evaluation order.
 * No Rust panic ever crosses this boundary: one is caught and returned as LM_ERR_PANIC (the process's panic
 * hook still prints its message to stderr). Out-of-memory aborts the process, as malloc failure does in most
 * C programs; only the KV buffer is allocated fallibly (LM_ERR_KV_CAPACITY).
 *
 * THREAD SAFETY. Every function may be called from any thread. One lm_engine may be shared by several threads:
 * a mutex inside it serialises lm_run calls on it (a second caller waits; runs never interleave), so results
 * are those of running the calls one after another. Use one engine per thread for parallel runs (each holds its
 * own weights mapping and KV buffer). lm_engine_free while another thread is inside lm_run on that engine is
 * safe: the run completes, and the memory is released when it returns; later calls with the handle fail with
 * LM_ERR_INVALID_HANDLE. An lm_result is immutable: its accessors may be called from several threads at once,
 * but it must not be freed while another thread still uses its strings. The last error is per thread.
 * The cpu backend computes on a process-wide rayon thread pool (all cores; RAYON_NUM_THREADS sets its size).
 *
 * PANICS INSIDE A RUN. If a run panics (a bug), its engine is left poisoned: later lm_run calls on it return
 * LM_ERR_POISONED; free it and open another.
 */
#ifndef LATENTMAS_H
#define LATENTMAS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes: 0 is success, every failure is negative. lm_status_name(code) gives the name. */
typedef enum lm_status {
    LM_OK = 0,
    LM_ERR_NULL_POINTER = -1,     /* a required pointer argument or string field is NULL */
    LM_ERR_INVALID_UTF8 = -2,     /* a string is not valid UTF-8 */
    LM_ERR_INVALID_ARGUMENT = -3, /* unknown word, number out of range, meaningless combination, misaligned pointer */
    LM_ERR_INVALID_HANDLE = -4,   /* not a live handle of that kind: freed already, never issued, other kind */
    LM_ERR_MODEL = -5,            /* the model could not be found or loaded (directory, hub, config, weights, tokenizer) */
    LM_ERR_DEVICE = -6,           /* the device is not available ("cuda" without a driver/GPU/kernels) */
    LM_ERR_KV_CAPACITY = -7,      /* the KV buffer cannot be allocated, holds no token, or is too small for the run */
    LM_ERR_RUN = -8,              /* the run failed for another reason (prompt template, tokenizer, ...) */
    LM_ERR_PANIC = -9,            /* a bug inside the library, caught at the boundary */
    LM_ERR_POISONED = -10         /* the engine was inside a run that panicked: only lm_engine_free is left */
} lm_status;

/* Opaque handles (see HANDLES above). */
typedef struct lm_engine lm_engine;
typedef struct lm_result lm_result;

/* How to open an engine. Start from lm_engine_default_params() and set the fields you need. */
typedef struct {
    const char *model;        /* model directory, or a Hugging Face hub id (downloaded). Default NULL: required */
    const char *device;       /* "cpu", "cuda", "auto" (cuda when usable, else cpu) or "emu" (tests). Default "auto" */
    uint64_t kv_budget_bytes; /* the ONE KV buffer, allocated at open and never grown. 0 (default) = auto:
                                 4096 tokens, enough for one LatentMAS question at the default run params
                                 (Qwen3-0.6B: 896 MiB). TextMAS keeps the agents' text in its prompts and needs
                                 ~21k tokens at 2048 new tokens: give it an explicit budget.
                                 Too small for a run: lm_run returns LM_ERR_KV_CAPACITY with the size needed. */
    int realign;              /* nonzero: map hidden states through the ridge alignment W_a, computed at open
                                 (cached next to the model); 0 (default): rescale only, as the reference */
} lm_engine_params;

/* How to run a question. Start from lm_run_default_params() and set the fields you need. The words are the
 * CLI's (`latentmas run --help`). */
typedef struct {
    const char *method;      /* "single", "text" or "latent". Default "latent" */
    const char *topology;    /* "sequential", "hierarchical" or "parallel" (latent only). Default "sequential" */
    const char *task_family; /* "math", "mc", "medqa" or "code": the prompts' answer format. Default "math" */
    int latent_steps;        /* latent steps per non-final agent, >= 0; used by "latent" only. Default 10 */
    int max_new_tokens;      /* >= 1. Default 2048 */
    int greedy;              /* nonzero: argmax decoding; temperature/top_k/seed are then ignored. Default 0 */
    float temperature;       /* > 0 and finite unless greedy. Default 0.6 */
    int top_k;               /* >= 0; 0 = no top-k cut. Default 20 */
    float top_p;             /* in (0, 1] (checked even when greedy). Default 0.95 */
    uint64_t seed;           /* sampler seed. Default 0 */
} lm_run_params;

/* Defaults, returned by value. */
lm_engine_params lm_engine_default_params(void);
lm_run_params lm_run_default_params(void);

/* Loads the model and tokenizer, allocates the KV buffer, computes or loads the alignment. On success *out is
 * a new engine (free it with lm_engine_free); on failure *out is NULL. */
int lm_engine_open(const lm_engine_params *params, lm_engine **out);

/* Runs one question. On success *out is a new result (free it with lm_result_free); on failure *out is NULL.
 * Serialises with other lm_run calls on the same engine. */
int lm_run(lm_engine *engine, const char *question, const lm_run_params *params, lm_result **out);

/* The final agent's text (special tokens skipped, stripped). Owned by r. NULL only on failure. */
const char *lm_result_text(const lm_result *r);
/* The extracted answer, owned by r; NULL when no answer was extracted (lm_last_error_code() == 0 then). */
const char *lm_result_answer(const lm_result *r);
/* The report (per-agent tokens, latent steps, timings, KV bytes) as one JSON object: exactly what
 * `latentmas run --json` prints for the question. Owned by r. NULL only on failure. */
const char *lm_result_json(const lm_result *r);

/* Frees a result (and its strings). NULL: no-op. Not a live result: LM_ERR_INVALID_HANDLE in lm_last_error_code. */
void lm_result_free(lm_result *r);
/* Frees an engine. NULL: no-op. Not a live engine: LM_ERR_INVALID_HANDLE in lm_last_error_code. */
void lm_engine_free(lm_engine *engine);

/* This thread's last failure: a message naming the function and the bad argument; "" (never NULL) after a
 * successful call. Valid until the next call on this thread that can fail (see ERRORS). */
const char *lm_last_error(void);

/* ---- Beyond the API ---- */

/* This thread's last failure code (an lm_status); 0 after a successful call. */
int lm_last_error_code(void);
/* The name of a status code ("LM_ERR_KV_CAPACITY"); "LM_ERR_UNKNOWN" for other values. Static string. */
const char *lm_status_name(int code);
/* The library version ("0.1.0"). Static string. */
const char *lm_version(void);
/* The engine's KV buffer: its size in tokens and in bytes. tokens and bytes must not be NULL. */
int lm_engine_kv_capacity(const lm_engine *engine, uint64_t *tokens, uint64_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* LATENTMAS_H */
