/*
 * stream_run.c: whole LatentMAS runs through lm_run, one engine, several questions, each final answer printed
 * token by token as it is decoded. A question can be cut short the way a client that stops reading would:
 * `--abort-after N` makes the token callback return false after N tokens of every question that follows it
 * on the command line; the run then ends with LM_ERR_ABORTED and the engine goes on with the next question.
 * Ctrl-C aborts the current question through the abort callback and skips the rest.
 *
 * Build (from the repository root, after `cargo build --release -p latentmas-capi`):
 *     cc -std=c11 -Wall -Wextra ffi/examples/stream_run.c $(target/release/latentmas-ffi-flags) -o stream_run
 * Run:
 *     ./stream_run [--method M] [--topology T] [--latent-steps N] [--max-new-tokens N] MODEL
 *                  QUESTION [--abort-after N] [QUESTION ...]
 *     ./stream_run Qwen/Qwen3-0.6B "What is 12 + 30?" --abort-after 8 "Name three primes."
 *
 * Output, per question: "== question K ==", the answer's pieces as they come, then on a line of its own
 * "== done: N tokens, answer A ==" or "== aborted after N tokens: MESSAGE ==".
 * Exit status: 0 when every question ran or was aborted as asked, 1 on any other failure (its code and message
 * on stderr), 2 on bad usage, 130 on Ctrl-C.
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

/* What the callbacks of one run share. */
typedef struct {
    int streamed;    /* tokens printed so far */
    int abort_after; /* stop after this many tokens; < 0 = never */
} stream_state;

static bool print_piece(int32_t token, const char *piece, void *user) {
    (void)token;
    stream_state *s = user;
    if (s->abort_after >= 0 && s->streamed >= s->abort_after) return false; /* the "client" went away */
    fputs(piece, stdout);
    fflush(stdout);
    s->streamed++;
    return true;
}

static bool stop_requested(void *user) {
    (void)user;
    return interrupted != 0;
}

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [--method M] [--topology T] [--latent-steps N] [--max-new-tokens N] MODEL\n"
            "          QUESTION [--abort-after N] [QUESTION ...]\n",
            prog);
}

/* Parses a decimal integer argument, or exits with usage. */
static int number(const char *prog, const char *flag, const char *text) {
    char *end = NULL;
    long v = strtol(text, &end, 10);
    if (end == text || *end != '\0' || v < 0 || v > 1000000) {
        fprintf(stderr, "%s: %s expects a number in [0, 1000000], got \"%s\"\n", prog, flag, text);
        exit(2);
    }
    return (int)v;
}

/* Runs one question, streaming its answer; 0 when it ran or was aborted as asked, else 1 or 130. */
static int run_one(lm_engine *engine, const lm_run_params *base, int k, const char *question, int abort_after) {
    stream_state state = {0, abort_after};
    lm_run_params rp = *base;
    rp.on_token = print_piece;
    rp.should_abort = stop_requested;
    rp.user_data = &state;
    printf("== question %d ==\n", k);
    fflush(stdout);
    lm_result *result = NULL;
    int rc = lm_run(engine, question, &rp, &result);
    if (rc == LM_OK) {
        const char *answer = lm_result_answer(result);
        printf("\n== done: %d tokens, answer %s ==\n", state.streamed, answer ? answer : "(none)");
        lm_result_free(result);
        return 0;
    }
    if (rc == LM_ERR_ABORTED) {
        printf("\n== aborted after %d tokens: %s ==\n", state.streamed, lm_last_error());
        return interrupted ? 130 : (abort_after >= 0 ? 0 : 1);
    }
    fprintf(stderr, "\nlm_run failed: %s (%d): %s\n", lm_status_name(rc), rc, lm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    lm_engine_params ep = lm_engine_default_params();
    lm_run_params rp = lm_run_default_params();
    rp.method = "latent";
    rp.greedy = true;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            usage(argv[0]);
            return 2;
        }
        if (strcmp(a, "--method") == 0) {
            rp.method = argv[++i];
        } else if (strcmp(a, "--topology") == 0) {
            rp.topology = argv[++i];
        } else if (strcmp(a, "--latent-steps") == 0) {
            rp.latent_steps = number(argv[0], a, argv[++i]);
        } else if (strcmp(a, "--max-new-tokens") == 0) {
            rp.max_new_tokens = number(argv[0], a, argv[++i]);
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (i + 1 >= argc) { /* a model and at least one question */
        usage(argv[0]);
        return 2;
    }
    ep.model = argv[i++];
    if (lm_abi_version() != LM_ABI_VERSION) {
        fprintf(stderr, "liblatentmas has ABI %u, this program was built for %d\n", lm_abi_version(), LM_ABI_VERSION);
        return 1;
    }
    signal(SIGINT, on_sigint);

    lm_engine *engine = NULL;
    int rc = lm_engine_open(&ep, &engine);
    if (rc != LM_OK) {
        fprintf(stderr, "lm_engine_open failed: %s (%d): %s\n", lm_status_name(rc), rc, lm_last_error());
        return 1;
    }
    int status = 0, abort_after = -1, k = 0;
    for (; i < argc && status != 130; i++) {
        if (strcmp(argv[i], "--abort-after") == 0) {
            if (i + 1 >= argc) {
                usage(argv[0]);
                status = 2;
                break;
            }
            abort_after = number(argv[0], argv[i], argv[i + 1]);
            i++;
            continue;
        }
        int one = run_one(engine, &rp, ++k, argv[i], abort_after);
        if (one != 0) status = one;
    }
    lm_engine_free(engine);
    return status;
}
