/*
 * run.c: the latentmas C ABI end to end. Opens a model, runs one question, prints the text, the extracted
 * answer and the JSON report, frees everything.
 *
 * Build (from the repository root, after `cargo build --release`):
 *     cc -std=c11 -Wall -Wextra ffi/examples/run.c $(target/release/latentmas-ffi-flags) -o run
 * Run:
 *     ./run [--method single|text|latent] [--topology sequential|hierarchical|parallel] [--latent-steps N]
 *           [--max-new-tokens N] [--greedy] [--kv-budget-bytes N] MODEL [QUESTION]
 *     ./run --greedy --max-new-tokens 64 Qwen/Qwen3-0.6B "What is 12 + 30?"
 *
 * Output: "== text ==", the text; "== answer ==", the answer or "(none)"; "== report ==", the JSON on one line.
 * Exit status: 0 on success, 1 on a failure (its code and message on stderr), 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latentmas.h"

static void usage(const char *prog) {
    fprintf(stderr,
            "usage: %s [--method M] [--topology T] [--latent-steps N] [--max-new-tokens N] [--greedy]\n"
            "          [--kv-budget-bytes N] MODEL [QUESTION]\n",
            prog);
}

/* Parses a decimal integer argument, or exits with usage. */
static long long number(const char *prog, const char *flag, const char *text) {
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0') {
        fprintf(stderr, "%s: %s expects a number, got \"%s\"\n", prog, flag, text);
        exit(2);
    }
    return v;
}

/* Prints the failure of `what` with its code and this thread's last error. */
static void report_failure(const char *what, int code) {
    fprintf(stderr, "%s failed: %s (%d): %s\n", what, lm_status_name(code), code, lm_last_error());
}

int main(int argc, char **argv) {
    lm_engine_params ep = lm_engine_default_params();
    lm_run_params rp = lm_run_default_params();
    const char *question = "What is 12 plus 30?";
    int positional = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(a, "--greedy") == 0) {
            rp.greedy = true;
        } else if (strcmp(a, "--method") == 0 && has_value) {
            rp.method = argv[++i];
        } else if (strcmp(a, "--topology") == 0 && has_value) {
            rp.topology = argv[++i];
        } else if (strcmp(a, "--latent-steps") == 0 && has_value) {
            rp.latent_steps = (int)number(argv[0], a, argv[++i]);
        } else if (strcmp(a, "--max-new-tokens") == 0 && has_value) {
            rp.max_new_tokens = (int)number(argv[0], a, argv[++i]);
        } else if (strcmp(a, "--kv-budget-bytes") == 0 && has_value) {
            ep.kv_budget_bytes = (uint64_t)number(argv[0], a, argv[++i]);
        } else if (a[0] == '-' && a[1] == '-') {
            usage(argv[0]);
            return 2;
        } else if (positional == 0) {
            ep.model = a;
            positional++;
        } else if (positional == 1) {
            question = a;
            positional++;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (ep.model == NULL) {
        usage(argv[0]);
        return 2;
    }

    /* 1. Open the engine: model, tokenizer, the KV buffer, the alignment. */
    lm_engine *engine = NULL;
    int rc = lm_engine_open(&ep, &engine);
    if (rc != LM_OK) {
        report_failure("lm_engine_open", rc);
        return 1;
    }

    /* 2. Run one question. */
    lm_result *result = NULL;
    rc = lm_run(engine, question, &rp, &result);
    if (rc != LM_OK) {
        report_failure("lm_run", rc);
        lm_engine_free(engine);
        return 1;
    }

    /* 3. Read the result: its strings belong to it and stay valid until lm_result_free. */
    const char *answer = lm_result_answer(result);
    printf("== text ==\n%s\n", lm_result_text(result));
    printf("== answer ==\n%s\n", answer ? answer : "(none)");
    printf("== report ==\n%s\n", lm_result_json(result));

    /* 4. Free everything (the result may outlive the engine; the order does not matter). */
    lm_result_free(result);
    lm_engine_free(engine);
    return 0;
}
