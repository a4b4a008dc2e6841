/*
 * latentmas.h: the C ABI of latentmas (LatentMAS, multi-agent reasoning in latent space, on a Qwen3 engine).
 *
 * Build and link (flags for this checkout: `latentmas-ffi-flags`):
 *     cargo build --release
 *     cc prog.c -I ffi target/release/liblatentmas.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o prog
 * or against the shared library:
 *     cc prog.c -I ffi -L target/release -llatentmas -Wl,-rpath,$PWD/target/release -o prog
 * Check lm_abi_version() == LM_ABI_VERSION at startup: it changes whenever a layout, a prototype or a code does.
 *
 * Two levels (ffi/examples/run.c and ffi/examples/stream.c):
 *   - lm_run: one whole question (single agent, TextMAS or LatentMAS), a result with the text, the answer and
 *     the JSON report; an optional progress callback sees each agent's prefill, latent and decode phases.
 *   - rows: lm_chat_tokenize / lm_tokenize give token ids (lm_detokenize the text back); lm_row_create
 *     takes a range of the engine's KV buffer; lm_row_prefill appends tokens; lm_row_latent runs latent steps
 *     (the LatentMAS working memory), optionally copying the fed vectors out; lm_row_decode streams tokens
 *     through a callback and polls an abort callback; lm_row_free gives the range back. lm_run needs the
 *     whole buffer: it refuses to run (LM_ERR_KV_CAPACITY) while rows are live.
 *
 * STRINGS. Every string in and out is UTF-8 and NUL-terminated. Strings passed in are only read during the call.
 * Invalid UTF-8 is LM_ERR_INVALID_UTF8. A NUL inside generated text comes out as U+FFFD.
 *
 * OWNERSHIP. The caller owns what it passes in. The library owns lm_engine (lm_engine_open / lm_engine_free),
 * lm_result (lm_run / lm_result_free; it may outlive its engine), lm_row (lm_row_create / lm_row_free; it keeps
 * its engine's memory alive until freed), the strings of a result (valid until lm_result_free), lm_last_error's
 * string (until the next call on this thread that can fail), and the static strings (lm_status_name,
 * lm_version, the default params' words). Freeing NULL is a no-op.
 *
 * HANDLES. lm_engine *, lm_result * and lm_row * are opaque tokens, not addresses: the library looks them up
 * in a table of live handles and never dereferences them, and never issues a value twice in a process. A
 * double free, a use after free or a handle of another kind is LM_ERR_INVALID_HANDLE, never a crash. Other
 * pointers are checked for NULL and alignment; beyond that they must be valid for their C type.
 *
 * ERRORS. Functions returning int return LM_OK (0) or a negative lm_status. Every function that can fail first
 * clears this thread's last error and on failure records its code and a message naming the function and the
 * offending argument (lm_last_error_code, lm_last_error). On failure out-parameters are NULL. The functions
 * that cannot fail (default params, lm_last_error*, lm_status_name, lm_version, lm_abi_version) leave the last
 * error alone. No Rust panic crosses this boundary: one is LM_ERR_PANIC.
 *
 * THREADS. Every function may be called from any thread. One engine may be shared: a mutex inside it
 * serialises its calls (lm_run, every row call). Each engine computes on its own pool of n_threads workers;
 * the calling thread waits outside the pool, so callbacks (progress, on_token, should_abort) run on one of the
 * engine's worker threads while the caller waits. A callback must not call into the same engine (it would
 * wait for itself). The last error is per thread.
 *
 * PANICS. If a call panics (a bug), its engine is poisoned: later calls return LM_ERR_POISONED; free it.
 */

#ifndef LATENTMAS_H
#define LATENTMAS_H

/* Generated from crates/capi/src by cbindgen (crates/capi/cbindgen.toml): edit the Rust side, not this file. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
/* Marks the library's functions: exported from the shared library, imported by its users on Windows
 * (define LM_STATIC when linking the static library there). */
#if defined(_WIN32) && !defined(LM_STATIC)
#  if defined(LM_BUILD)
#    define LM_API __declspec(dllexport)
#  else
#    define LM_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define LM_API __attribute__((visibility("default")))
#else
#  define LM_API
#endif

/**
 * The ABI's version: `lm_abi_version()`. It changes whenever a struct's layout, a prototype or a status
 * code changes, so a program can refuse a library it was not compiled against.
 */
#define LM_ABI_VERSION 3

/**
 * `lm_phase`: what `lm_progress_callback` reports.
 */
enum lm_phase
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  LM_PHASE_PREFILL = 0,
  LM_PHASE_LATENT = 1,
  LM_PHASE_DECODE = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum lm_phase lm_phase;
#else
typedef int32_t lm_phase;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Status codes (`lm_status` in the header). 0 is success, every failure is negative.
 */
enum lm_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : int32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  LM_OK = 0,
  /**
   * A required pointer argument or string field is NULL.
   */
  LM_ERR_NULL_POINTER = -1,
  /**
   * A string is not valid UTF-8.
   */
  LM_ERR_INVALID_UTF8 = -2,
  /**
   * An unknown word, a number out of range, a combination that means nothing, or a misaligned pointer.
   */
  LM_ERR_INVALID_ARGUMENT = -3,
  /**
   * Not a live handle of that kind: freed already, never issued, or a handle of the other kind.
   */
  LM_ERR_INVALID_HANDLE = -4,
  /**
   * The model could not be found or loaded (directory, hub, config, weights, tokenizer).
   */
  LM_ERR_MODEL = -5,
  /**
   * The device is not available (`cuda` in this build).
   */
  LM_ERR_DEVICE = -6,
  /**
   * The KV buffer cannot be allocated, holds no token, or is too small for the run.
   */
  LM_ERR_KV_CAPACITY = -7,
  /**
   * The run failed for another reason (prompt template, tokenizer, ...).
   */
  LM_ERR_RUN = -8,
  /**
   * A bug inside the library was caught at the boundary (a Rust panic).
   */
  LM_ERR_PANIC = -9,
  /**
   * The engine was inside a run that panicked; only `lm_engine_free` is left to do with it.
   */
  LM_ERR_POISONED = -10,
  /**
   * The abort callback asked a decode to stop; the row holds the tokens fed so far, the engine is usable.
   */
  LM_ERR_ABORTED = -11,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum lm_status lm_status;
#else
typedef int32_t lm_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * `lm_engine`: the engine, its alignment and the prompt set, behind a mutex (runs serialise), and the thread
 * pool its work runs on.
 */
typedef struct lm_engine lm_engine;

/**
 * `lm_result`: immutable once made; its strings live as long as the handle.
 */
typedef struct lm_result lm_result;

/**
 * `lm_row`: one row of an engine's KV buffer. Holds its engine alive; freeing it returns its range.
 */
typedef struct lm_row lm_row;

/**
 * `lm_engine_params`.
 */
typedef struct {
  /**
   * Model directory or hub id (UTF-8, NUL-terminated). No default: NULL is an error.
   */
  const char *model;
  /**
   * `cpu`, `cuda` or `auto` (default `auto`: cpu in this build).
   */
  const char *device;
  /**
   * KV buffer size in bytes; 0 = auto ([`AUTO_KV_TOKENS`] tokens).
   */
  uint64_t kv_budget_bytes;
  /**
   * Worker threads of the engine's own thread pool; 0 = one per core (`RAYON_NUM_THREADS` if set).
   */
  int32_t n_threads;
  /**
   * Map hidden states through the ridge alignment W_a (computed or loaded at open).
   */
  bool realign;
} lm_engine_params;

/**
 * `lm_sampling_params`: how `lm_row_decode` picks tokens.
 */
typedef struct {
  /**
   * Argmax decoding (the other fields are then ignored, but top_p must still be in (0, 1]).
   */
  bool greedy;
  /**
   * > 0 and finite unless greedy.
   */
  float temperature;
  /**
   * ≥ 0; 0 = no top-k cut.
   */
  int32_t top_k;
  /**
   * In (0, 1].
   */
  float top_p;
  uint64_t seed;
} lm_sampling_params;

/**
 * Sees each token `lm_row_decode` picks: its id and its text (UTF-8, "" for a special token or while a
 * character is incomplete). Returning false stops the decode after this token (status LM_OK).
 */
typedef bool (*lm_token_callback)(int32_t token, const char *piece, void *user_data);

/**
 * Polled before each token of `lm_row_decode`; returning true stops it with LM_ERR_ABORTED.
 */
typedef bool (*lm_abort_callback)(void *user_data);

/**
 * Reports a phase of `lm_run`: `agent` (0-based, counted by prefills) starts `phase`; `work` is its size
 * (prompt tokens, latent steps, or the new-token limit).
 */
typedef void (*lm_progress_callback)(int32_t agent, lm_phase phase, int32_t work, void *user_data);

/**
 * `lm_run_params`.
 */
typedef struct {
  /**
   * `single`, `text` or `latent`.
   */
  const char *method;
  /**
   * `sequential`, `hierarchical` or `parallel`.
   */
  const char *topology;
  /**
   * `math`, `mc`, `medqa` or `code`.
   */
  const char *task_family;
  /**
   * Latent steps per non-final agent, ≥ 0; used by `latent` only, ignored by the other methods.
   */
  int latent_steps;
  /**
   * ≥ 1.
   */
  int max_new_tokens;
  /**
   * Argmax decoding (the sampling fields are then ignored, but top_p must still be in (0, 1]).
   */
  bool greedy;
  /**
   * > 0 and finite unless greedy.
   */
  float temperature;
  /**
   * ≥ 0; 0 = no top-k cut.
   */
  int top_k;
  /**
   * In (0, 1].
   */
  float top_p;
  uint64_t seed;
  /**
   * Called at the start of each phase of each agent; may be NULL.
   */
  lm_progress_callback progress;
  /**
   * Passed to `progress` unchanged.
   */
  void *progress_user_data;
  /**
   * Sees each token of the final agent's answer with its text piece, as `lm_row_decode`'s callback does;
   * may be NULL. lm_run returns whole runs only: returning false aborts the run (LM_ERR_ABORTED).
   */
  lm_token_callback on_token;
  /**
   * Polled at the start of each phase and after each decoded token (of every agent that decodes);
   * returning true stops the run with LM_ERR_ABORTED. May be NULL.
   */
  lm_abort_callback should_abort;
  /**
   * Passed to `on_token` and `should_abort` unchanged.
   */
  void *user_data;
} lm_run_params;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * `lm_engine_default_params`: model NULL (must be set), device `auto`, kv_budget_bytes 0 (auto), n_threads 0
 * (one per core), realign false.
 */
LM_API lm_engine_params lm_engine_default_params(void);

/**
 * `lm_abi_version`: [`LM_ABI_VERSION`]; compare it with the header's `LM_ABI_VERSION`.
 */
LM_API uint32_t lm_abi_version(void);

/**
 * `lm_engine_open`: loads the model, allocates the KV buffer once, computes (or loads) the alignment.
 *
 * # Safety
 * `params` must be NULL or point to an `lm_engine_params` whose strings are NULL or NUL-terminated; `out` must
 * be NULL or point to a writable `lm_engine *`.
 */
LM_API int lm_engine_open(const lm_engine_params *params, lm_engine **out);

/**
 * `lm_result_text`: the final agent's text; owned by `r`.
 */
LM_API const char *lm_result_text(const lm_result *r);

/**
 * `lm_result_answer`: the extracted answer, NULL when none was extracted (then `lm_last_error_code() == 0`).
 */
LM_API const char *lm_result_answer(const lm_result *r);

/**
 * `lm_result_json`: the report, exactly as `latentmas run --json` prints it.
 */
LM_API const char *lm_result_json(const lm_result *r);

/**
 * `lm_result_free`: NULL is a no-op; anything but a live result sets `LM_ERR_INVALID_HANDLE`.
 */
LM_API void lm_result_free(lm_result *r);

/**
 * `lm_engine_free`: NULL is a no-op; anything but a live engine sets `LM_ERR_INVALID_HANDLE`. A run in progress
 * on another thread finishes first; the memory goes when it returns.
 */
LM_API void lm_engine_free(lm_engine *engine);

/**
 * `lm_engine_kv_capacity`: the KV buffer's size in tokens and bytes.
 *
 * # Safety
 * `tokens` and `bytes` must each be NULL or point to a writable `uint64_t`.
 */
LM_API int lm_engine_kv_capacity(const lm_engine *engine, uint64_t *tokens, uint64_t *bytes);

/**
 * `lm_last_error`: this thread's last failure message; `""` (never NULL) after a successful call.
 */
LM_API const char *lm_last_error(void);

/**
 * `lm_last_error_code`: this thread's last failure code; 0 after a successful call.
 */
LM_API int lm_last_error_code(void);

/**
 * `lm_status_name`: the header's name of a code (`"LM_ERR_KV_CAPACITY"`); `"LM_ERR_UNKNOWN"` for other values.
 */
LM_API const char *lm_status_name(int code);

/**
 * `lm_version`: the library's version (`"0.1.0"`).
 */
LM_API const char *lm_version(void);

/**
 * `lm_tokenize`: the token ids of `text` (no special tokens added, no chat template) into `tokens`, which
 * holds `n_max`. `*n_tokens` is always set to the count, so a call with `tokens` NULL and `n_max` 0 asks for
 * the size (it returns LM_ERR_INVALID_ARGUMENT, as any too-small buffer does).
 *
 * # Safety
 * `text` NULL or NUL-terminated; `tokens` NULL or `n_max` writable `int32_t`; `n_tokens` NULL or writable.
 */
LM_API int lm_tokenize(const lm_engine *engine, const char *text, int32_t *tokens, size_t n_max, size_t *n_tokens);

/**
 * `lm_chat_tokenize`: renders `[system, user]` with the model's own chat template (generation prompt
 * included) and tokenizes it. `system` may be NULL (no system turn).
 *
 * # Safety
 * As [`lm_tokenize`]; `system` NULL or NUL-terminated.
 */
LM_API
int lm_chat_tokenize(const lm_engine *engine,
                     const char *system,
                     const char *user,
                     int32_t *tokens,
                     size_t n_max,
                     size_t *n_tokens);

/**
 * `lm_detokenize`: the text of `n_tokens` ids (special tokens skipped), NUL-terminated, into `text` of
 * `text_size` bytes. `*n_bytes` is always set to the text's length without the NUL, so a call with `text`
 * NULL and `text_size` 0 asks for the size (it returns LM_ERR_INVALID_ARGUMENT, as any too-small buffer does).
 *
 * # Safety
 * `tokens` NULL or `n_tokens` readable `int32_t`; `text` NULL or `text_size` writable bytes; `n_bytes` NULL
 * or writable.
 */
LM_API
int lm_detokenize(const lm_engine *engine,
                  const int32_t *tokens,
                  size_t n_tokens,
                  char *text,
                  size_t text_size,
                  size_t *n_bytes);

/**
 * `lm_engine_dims`: the hidden size (floats per latent vector) and the vocabulary size.
 *
 * # Safety
 * `hidden_size` and `vocab_size` NULL or writable.
 */
LM_API int lm_engine_dims(const lm_engine *engine, uint32_t *hidden_size, uint32_t *vocab_size);

/**
 * `lm_row_create`: a new empty row of `n_ctx` tokens (a free range of the engine's KV buffer, first fit),
 * its positions starting at 0. LM_ERR_KV_CAPACITY when no free range is that long.
 *
 * # Safety
 * `out` NULL or a writable `lm_row *`.
 */
LM_API int lm_row_create(lm_engine *engine, uint32_t n_ctx, lm_row **out);

/**
 * `lm_row_free`: NULL is a no-op; its range of the KV buffer is free for the next row.
 */
LM_API void lm_row_free(lm_row *row);

/**
 * `lm_row_size`: the tokens a row holds and its capacity.
 *
 * # Safety
 * `n_tokens` and `n_ctx` NULL or writable.
 */
LM_API int lm_row_size(const lm_row *row, uint32_t *n_tokens, uint32_t *n_ctx);

/**
 * `lm_row_prefill`: appends `n_tokens` tokens to the row (LM_ERR_KV_CAPACITY when they do not fit in its
 * n_ctx); afterwards the row can decode or take latent steps.
 *
 * # Safety
 * `tokens` NULL or `n_tokens` readable `int32_t`.
 */
LM_API int lm_row_prefill(lm_row *row, const int32_t *tokens, size_t n_tokens);

/**
 * `lm_row_latent`: `n_steps` latent steps on the row, from the hidden state its last prefill or latent step
 * left. When `out` is not NULL the fed vectors are copied there, step-major: `out_len` must be at least
 * `n_steps * hidden_size` floats (`lm_engine_dims`).
 *
 * # Safety
 * `out` NULL or `out_len` writable floats.
 */
LM_API int lm_row_latent(lm_row *row, int32_t n_steps, float *out, size_t out_len);

/**
 * `lm_sampling_default_params`: the CLI's sampling (0.6 / 20 / 0.95, seed 0, not greedy).
 */
LM_API lm_sampling_params lm_sampling_default_params(void);

/**
 * `lm_row_decode`: decodes up to `max_new` tokens from the logits of the row's last prefill, feeding each
 * token back into the row (all but the last: to continue, prefill it with the next prompt).
 * `on_token` (may be NULL) sees each token with its text piece; returning false stops after it.
 * `should_abort` (may be NULL) is polled before the first token and after each one; returning true stops
 * with LM_ERR_ABORTED. Both get `user_data` and run on one of the engine's threads while this call waits.
 * Returns LM_OK when the model's stop token, `max_new`, the row's end or `on_token` ended the decode.
 * `*n_generated` (may be NULL) is the number of tokens reported, on success and on abort. Afterwards the row
 * has no logits or hidden state: prefill it before the next decode or latent steps.
 *
 * # Safety
 * `params` NULL or readable; the callbacks NULL or callable with `user_data`; `n_generated` NULL or writable.
 */
LM_API
int lm_row_decode(lm_row *row,
                  const lm_sampling_params *params,
                  int32_t max_new,
                  lm_token_callback on_token,
                  lm_abort_callback should_abort,
                  void *user_data,
                  int32_t *n_generated);

/**
 * `lm_run_default_params`: the CLI's defaults (latent, sequential, math, 10 latent steps, 2048 new tokens,
 * sampling 0.6 / 20 / 0.95, seed 0).
 */
LM_API lm_run_params lm_run_default_params(void);

/**
 * `lm_run`: runs one question in the largest free range of the engine's KV buffer (rows of the row API stay
 * as they are); serialises with every other call on the same engine. `params.on_token` streams the final
 * agent's answer; `params.should_abort` (or `on_token` returning false) stops the run with LM_ERR_ABORTED.
 *
 * # Safety
 * `engine` may be any value; `question` must be NULL or NUL-terminated; `params` must be NULL or point to an
 * `lm_run_params` whose strings are NULL or NUL-terminated; `out` must be NULL or point to a writable
 * `lm_result *`.
 */
LM_API int lm_run(lm_engine *engine, const char *question, const lm_run_params *params, lm_result **out);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* LATENTMAS_H */
