/*
 * stream.c: a LatentMAS chain built from the row API, its answer streamed token by token. A planner agent
 * reads the question and thinks in latent space (its latent steps stay in the row's KV cache, the agents'
 * shared working memory); the answering agent's prompt is appended to the same row and decoded, each token
 * printed as it comes. Ctrl-C stops the decode through the abort callback.
 *
 * Build (from the repository root, after `cargo build --release`):
 *     cc -std=c11 -Wall -Wextra ffi/examples/stream.c $(target/release/latentmas-ffi-flags) -o stream
 * Run:
 *     ./stream [--latent-steps N] [--max-new-tokens N] [--threads N] MODEL [QUESTION]
 *
 * Output: the answer as it is decoded, then "\n== N tokens ==" on its own line.
 * Exit status: 0 on success, 1 on a failure (its code and message on stderr), 2 on bad usage, 130 on Ctrl-C.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latentmas.h"

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static bool print_piece(int32_t token, const char *piece, void *user) {
    (void)token;
    (void)user;
    fputs(piece, stdout);
    fflush(stdout);
    return true;
}

static bool stop_requested(void *user) {
    (void)user;
    return interrupted != 0;
}

static int fail(const char *what, int code) {
    fprintf(stderr, "%s failed: %s (%d): %s\n", what, lm_status_name(code), code, lm_last_error());
    return 1;
}

/* Renders `user` with the model's chat template into a new buffer; NULL on failure (*rc set). */
static int32_t *chat(lm_engine *e, const char *system, const char *user, size_t *n, int *rc) {
    *rc = lm_chat_tokenize(e, system, user, NULL, 0, n); /* asks for the size */
    if (*rc != LM_ERR_INVALID_ARGUMENT || *n == 0) return NULL;
    int32_t *ids = malloc(*n * sizeof *ids);
    if (!ids) return NULL;
    *rc = lm_chat_tokenize(e, system, user, ids, *n, n);
    if (*rc != LM_OK) {
        free(ids);
        return NULL;
    }
    return ids;
}

int main(int argc, char **argv) {
    int latent_steps = 10, max_new = 256, threads = 0, positional = 0;
    const char *model = NULL, *question = "What is 12 plus 30?";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--latent-steps") == 0 && i + 1 < argc) {
            latent_steps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--max-new-tokens") == 0 && i + 1 < argc) {
            max_new = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (positional == 0) {
            model = argv[i];
            positional++;
        } else if (positional == 1) {
            question = argv[i];
            positional++;
        } else {
            positional = 99;
        }
    }
    if (!model || positional > 2) {
        fprintf(stderr, "usage: %s [--latent-steps N] [--max-new-tokens N] [--threads N] MODEL [QUESTION]\n", argv[0]);
        return 2;
    }
    if (lm_abi_version() != LM_ABI_VERSION) {
        fprintf(stderr, "liblatentmas has ABI %u, this program was built for %d\n", lm_abi_version(), LM_ABI_VERSION);
        return 1;
    }
    signal(SIGINT, on_sigint);

    lm_engine_params ep = lm_engine_default_params();
    ep.model = model;
    ep.n_threads = threads;
    lm_engine *engine = NULL;
    int rc = lm_engine_open(&ep, &engine);
    if (rc != LM_OK) return fail("lm_engine_open", rc);

    size_t n_plan = 0, n_answer = 0;
    int32_t *plan = chat(engine, "You are a planner. Think step by step about how to solve the question.", question,
                         &n_plan, &rc);
    int32_t *answer = plan ? chat(engine, "You answer the question; the plan above is in your memory.", question,
                                  &n_answer, &rc)
                           : NULL;
    lm_row *row = NULL;
    int32_t generated = 0;
    int status = 0;
    if (!plan || !answer) {
        status = fail("lm_chat_tokenize", rc);
    } else if ((rc = lm_row_create(engine, (uint32_t)(n_plan + (size_t)latent_steps + n_answer + (size_t)max_new),
                                   &row)) != LM_OK) {
        status = fail("lm_row_create", rc);
    } else if ((rc = lm_row_prefill(row, plan, n_plan)) != LM_OK) {
        status = fail("lm_row_prefill (planner)", rc);
    } else if ((rc = lm_row_latent(row, latent_steps, NULL, 0)) != LM_OK) {
        status = fail("lm_row_latent", rc);
    } else if ((rc = lm_row_prefill(row, answer, n_answer)) != LM_OK) {
        status = fail("lm_row_prefill (answer)", rc);
    } else {
        lm_sampling_params sp = lm_sampling_default_params();
        sp.greedy = true;
        rc = lm_row_decode(row, &sp, max_new, print_piece, stop_requested, NULL, &generated);
        printf("\n== %d tokens ==\n", generated);
        if (rc == LM_ERR_ABORTED) {
            status = 130;
        } else if (rc != LM_OK) {
            status = fail("lm_row_decode", rc);
        }
    }
    lm_row_free(row);
    free(plan);
    free(answer);
    lm_engine_free(engine);
    return status;
}
