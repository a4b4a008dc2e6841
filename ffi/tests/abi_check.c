/*
 * abi_check.c: checks of the latentmas C ABI that crates/capi/tests/ffi.rs builds and runs.
 *
 *     abi_check layout          prints sizeof/alignof/offsetof of the param structs ("name value" lines) for the
 *                               Rust test to compare with its own layout
 *     abi_check errors MODEL    calls every entry point with bad arguments and checks the codes, the messages and
 *                               that out-parameters are cleared; then checks the good paths still work
 *     abi_check threads MODEL   one engine shared by several threads: concurrent runs give the single-thread
 *                               results; freeing an engine while another thread runs on it is safe
 *     abi_check leak MODEL      runs one question and "forgets" lm_result_free: a leak checker must report it
 *
 * Every failed check prints the file, line, the call, the expected and actual codes and lm_last_error(), so
 * it can be rerun alone; the exit status is the number of failed checks (capped at 100).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latentmas.h"

#include "check.h"

/* ---- layout ---------------------------------------------------------------------------------------------- */

#define FIELD(type, field) printf(#type "." #field " %zu\n", offsetof(type, field))

static int layout(void) {
    printf("sizeof.lm_engine_params %zu\n", sizeof(lm_engine_params));
    printf("alignof.lm_engine_params %zu\n", _Alignof(lm_engine_params));
    FIELD(lm_engine_params, model);
    FIELD(lm_engine_params, device);
    FIELD(lm_engine_params, kv_budget_bytes);
    FIELD(lm_engine_params, n_threads);
    FIELD(lm_engine_params, realign);
    printf("sizeof.lm_run_params %zu\n", sizeof(lm_run_params));
    printf("alignof.lm_run_params %zu\n", _Alignof(lm_run_params));
    FIELD(lm_run_params, method);
    FIELD(lm_run_params, topology);
    FIELD(lm_run_params, task_family);
    FIELD(lm_run_params, latent_steps);
    FIELD(lm_run_params, max_new_tokens);
    FIELD(lm_run_params, greedy);
    FIELD(lm_run_params, temperature);
    FIELD(lm_run_params, top_k);
    FIELD(lm_run_params, top_p);
    FIELD(lm_run_params, seed);
    FIELD(lm_run_params, progress);
    FIELD(lm_run_params, progress_user_data);
    printf("sizeof.lm_sampling_params %zu\n", sizeof(lm_sampling_params));
    printf("alignof.lm_sampling_params %zu\n", _Alignof(lm_sampling_params));
    FIELD(lm_sampling_params, greedy);
    FIELD(lm_sampling_params, temperature);
    FIELD(lm_sampling_params, top_k);
    FIELD(lm_sampling_params, top_p);
    FIELD(lm_sampling_params, seed);
    printf("sizeof.bool %zu\n", sizeof(bool));
    printf("sizeof.lm_status %zu\n", sizeof(lm_status));
    return 0;
}

/* ---- errors ---------------------------------------------------------------------------------------------- */

static lm_run_params quick_params(void) {
    lm_run_params rp = lm_run_default_params();
    rp.greedy = true;
    rp.max_new_tokens = 3;
    rp.latent_steps = 2;
    return rp;
}

static int errors(const char *model) {
    /* A pointer value no library call returned, and an invalid UTF-8 string. */
    static int not_a_handle_storage;
    lm_engine *not_an_engine = (lm_engine *)(void *)&not_a_handle_storage;
    lm_result *not_a_result = (lm_result *)(void *)&not_a_handle_storage;
    const char *bad_utf8 = "caf\xc3\x28";
    int sentinel = 0;

    /* lm_engine_default_params / lm_run_default_params: the documented defaults, and they clear errors. */
    lm_engine_params ep = lm_engine_default_params();
    CHECK(ep.model == NULL && strcmp(ep.device, "auto") == 0 && ep.kv_budget_bytes == 0 && !ep.realign && ep.n_threads == 0);
    lm_run_params dp = lm_run_default_params();
    CHECK(strcmp(dp.method, "latent") == 0 && strcmp(dp.topology, "sequential") == 0);
    CHECK(strcmp(dp.task_family, "math") == 0 && dp.latent_steps == 10 && dp.max_new_tokens == 2048);
    CHECK(!dp.greedy && fabsf(dp.temperature - 0.6f) < 1e-6f && dp.top_k == 20);
    CHECK(fabsf(dp.top_p - 0.95f) < 1e-6f && dp.seed == 0);

    /* lm_engine_open */
    lm_engine *engine = (lm_engine *)(void *)&sentinel;
    CHECK_RC(lm_engine_open(NULL, &engine), LM_ERR_NULL_POINTER);
    CHECK(engine == NULL); /* out cleared on failure */
    CHECK_MESSAGE("params");
    ep = lm_engine_default_params();
    CHECK_RC(lm_engine_open(&ep, NULL), LM_ERR_NULL_POINTER);
    CHECK_MESSAGE("out");
    engine = (lm_engine *)(void *)&sentinel;
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_NULL_POINTER); /* model NULL */
    CHECK(engine == NULL);
    CHECK_MESSAGE("params.model");
    ep.model = bad_utf8;
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_INVALID_UTF8);
    CHECK_MESSAGE("params.model");
    ep.model = "/nonexistent/latentmas-model";
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_MODEL);
    ep.model = "";
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_MODEL);
    ep.model = model;
    ep.device = NULL;
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_NULL_POINTER);
    CHECK_MESSAGE("params.device");
    ep.device = "gpu";
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("cpu, cuda, auto, emu");
    ep.device = "cpu";
    ep.n_threads = -1;
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.n_threads = -1");
    CHECK(engine == NULL);
    ep.n_threads = 0;
    ep.device = bad_utf8;
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_INVALID_UTF8);
    ep.device = "cuda";
    {
        /* with a GPU this opens; without one it must fail as a device error naming the parameter */
        int rc = lm_engine_open(&ep, &engine);
        if (rc == LM_OK) {
            lm_engine_free(engine);
            engine = NULL;
        } else {
            CHECK(rc == LM_ERR_DEVICE);
            CHECK_MESSAGE("params.device \"cuda\"");
        }
    }
    ep.device = "cpu";
    ep.kv_budget_bytes = 1; /* less than one token */
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_KV_CAPACITY);
    CHECK_MESSAGE("kv_budget_bytes");
    ep.kv_budget_bytes = UINT64_MAX; /* cannot be allocated */
    CHECK_RC(lm_engine_open(&ep, &engine), LM_ERR_KV_CAPACITY);
    CHECK(engine == NULL);

    /* A good engine for the rest ("auto" device, auto KV budget). */
    ep = lm_engine_default_params();
    ep.model = model;
    CHECK_RC(lm_engine_open(&ep, &engine), LM_OK);
    CHECK(engine != NULL);
    CHECK(lm_last_error()[0] == '\0'); /* "" after success */
    if (engine == NULL) return finish("errors (no engine)");

    /* lm_engine_kv_capacity */
    uint64_t tokens = 0, bytes = 0;
    CHECK_RC(lm_engine_kv_capacity(engine, &tokens, &bytes), LM_OK);
    CHECK(tokens == 4096 && bytes > 0 && bytes % tokens == 0);
    CHECK_RC(lm_engine_kv_capacity(NULL, &tokens, &bytes), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_engine_kv_capacity(not_an_engine, &tokens, &bytes), LM_ERR_INVALID_HANDLE);
    CHECK_RC(lm_engine_kv_capacity(engine, NULL, &bytes), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_engine_kv_capacity(engine, &tokens, NULL), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_engine_kv_capacity(engine, (uint64_t *)(void *)((char *)&tokens + 1), &bytes),
             LM_ERR_INVALID_ARGUMENT); /* misaligned */

    /* lm_run: pointers */
    lm_run_params rp = quick_params();
    lm_result *r = (lm_result *)(void *)&sentinel;
    CHECK_RC(lm_run(NULL, "q", &rp, &r), LM_ERR_NULL_POINTER);
    CHECK(r == NULL);
    CHECK_MESSAGE("engine");
    CHECK_RC(lm_run(not_an_engine, "q", &rp, &r), LM_ERR_INVALID_HANDLE);
    CHECK_RC(lm_run(engine, NULL, &rp, &r), LM_ERR_NULL_POINTER);
    CHECK_MESSAGE("question");
    CHECK_RC(lm_run(engine, bad_utf8, &rp, &r), LM_ERR_INVALID_UTF8);
    CHECK_RC(lm_run(engine, "q", NULL, &r), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_run(engine, "q", &rp, NULL), LM_ERR_NULL_POINTER);
    /* lm_run: words */
    rp = quick_params();
    rp.method = NULL;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_NULL_POINTER);
    CHECK_MESSAGE("params.method");
    rp.method = "latentish";
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("latentish");
    rp.method = bad_utf8;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_UTF8);
    rp = quick_params();
    rp.topology = "ring";
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.topology");
    rp.topology = NULL;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_NULL_POINTER);
    rp = quick_params();
    rp.task_family = "poetry";
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.task_family");
    rp.task_family = NULL;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_NULL_POINTER);
    rp = quick_params();
    rp.method = "single";
    rp.topology = "parallel";
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    /* lm_run: numbers */
    rp = quick_params();
    rp.latent_steps = -1;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.latent_steps");
    rp = quick_params();
    rp.max_new_tokens = 0;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.max_new_tokens");
    rp.max_new_tokens = -5;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    rp = quick_params();
    rp.top_k = -1;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.top_k");
    rp = quick_params();
    rp.greedy = false;
    rp.temperature = 0.0f;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.temperature");
    rp.temperature = -1.0f;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    rp.temperature = NAN;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    rp.temperature = INFINITY;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    rp = quick_params();
    rp.top_p = 0.0f;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("params.top_p");
    rp.top_p = 1.5f;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    rp.top_p = NAN;
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_ARGUMENT);
    CHECK(r == NULL);

    /* Good runs: greedy ignores a zero temperature; a non-latent method ignores latent_steps. */
    rp = quick_params();
    rp.temperature = 0.0f;
    CHECK_RC(lm_run(engine, "What is 2 plus 2?", &rp, &r), LM_OK);
    CHECK(r != NULL);
    lm_result *r2 = NULL;
    rp = quick_params();
    rp.method = "single";
    CHECK_RC(lm_run(engine, "What is 2 plus 2?", &rp, &r2), LM_OK);

    /* lm_result_*: good and bad handles */
    CHECK_CODE(lm_result_text(r), LM_OK);
    CHECK(lm_result_text(r) != NULL && lm_result_json(r) != NULL);
    CHECK(strstr(lm_result_json(r), "\"method\":\"latent\"") != NULL);
    CHECK_CODE(lm_result_answer(r), LM_OK); /* NULL or an answer, but no failure */
    CHECK_CODE(lm_result_text(NULL), LM_ERR_NULL_POINTER);
    CHECK(lm_result_text(NULL) == NULL);
    CHECK_CODE(lm_result_answer(NULL), LM_ERR_NULL_POINTER);
    CHECK_CODE(lm_result_json(NULL), LM_ERR_NULL_POINTER);
    CHECK_CODE(lm_result_text(not_a_result), LM_ERR_INVALID_HANDLE);
    CHECK(lm_result_text(not_a_result) == NULL);
    CHECK_CODE(lm_result_answer(not_a_result), LM_ERR_INVALID_HANDLE);
    CHECK_CODE(lm_result_json(not_a_result), LM_ERR_INVALID_HANDLE);
    CHECK_CODE(lm_result_json((lm_result *)(void *)engine), LM_ERR_INVALID_HANDLE); /* wrong kind */
    CHECK_MESSAGE("is an lm_engine, not an lm_result");
    lm_result *r3 = NULL;
    CHECK_CODE(lm_run((lm_engine *)(void *)r, "q", &rp, &r3), LM_ERR_INVALID_HANDLE);
    CHECK_MESSAGE("is an lm_result, not an lm_engine");

    /* lm_result_free: NULL is a no-op, double free and wrong kind are detected */
    CHECK_CODE(lm_result_free(NULL), LM_OK);
    CHECK_CODE(lm_result_free((lm_result *)(void *)engine), LM_ERR_INVALID_HANDLE); /* the engine survives */
    CHECK_RC(lm_engine_kv_capacity(engine, &tokens, &bytes), LM_OK);
    CHECK_CODE(lm_result_free(r), LM_OK);
    CHECK_CODE(lm_result_free(r), LM_ERR_INVALID_HANDLE); /* double free */
    CHECK_MESSAGE("not a live lm_result");
    CHECK_CODE(lm_result_text(r), LM_ERR_INVALID_HANDLE); /* use after free */
    CHECK_CODE(lm_result_free(not_a_result), LM_ERR_INVALID_HANDLE);
    CHECK_CODE(lm_result_free(r2), LM_OK);

    /* A KV budget too small for the run: lm_run says how much it needs. */
    lm_engine *small = NULL;
    ep.kv_budget_bytes = 50 * (bytes / tokens); /* 50 tokens */
    CHECK_RC(lm_engine_open(&ep, &small), LM_OK);
    rp = quick_params();
    r = (lm_result *)(void *)&sentinel;
    CHECK_RC(lm_run(small, "What is 2 plus 2?", &rp, &r), LM_ERR_KV_CAPACITY);
    CHECK(r == NULL);
    CHECK_MESSAGE("kv_budget_bytes >=");

    /* lm_engine_free: NULL is a no-op, double free and wrong kind are detected */
    CHECK_CODE(lm_engine_free(NULL), LM_OK);
    CHECK_CODE(lm_engine_free((lm_engine *)(void *)r2), LM_ERR_INVALID_HANDLE); /* a freed result */
    CHECK_CODE(lm_engine_free(not_an_engine), LM_ERR_INVALID_HANDLE);
    CHECK_CODE(lm_engine_free(small), LM_OK);
    CHECK_CODE(lm_engine_free(engine), LM_OK);
    CHECK_CODE(lm_engine_free(engine), LM_ERR_INVALID_HANDLE); /* double free */
    CHECK_MESSAGE("not a live lm_engine");
    CHECK_RC(lm_run(engine, "q", &rp, &r), LM_ERR_INVALID_HANDLE); /* use after free */
    CHECK_RC(lm_engine_kv_capacity(engine, &tokens, &bytes), LM_ERR_INVALID_HANDLE);

    /* lm_last_error / lm_last_error_code / lm_status_name / lm_version */
    CHECK(lm_last_error() != NULL && lm_last_error()[0] != '\0'); /* the last call failed */
    CHECK(lm_last_error_code() == LM_ERR_INVALID_HANDLE);
    CHECK(strcmp(lm_status_name(LM_ERR_KV_CAPACITY), "LM_ERR_KV_CAPACITY") == 0);
    CHECK(strcmp(lm_status_name(12345), "LM_ERR_UNKNOWN") == 0);
    CHECK(lm_version() != NULL && strlen(lm_version()) > 0);
    /* lm_status_name and lm_version leave the last error alone (so they may share a printf with it). */
    CHECK(lm_last_error_code() == LM_ERR_INVALID_HANDLE);
    return finish("errors");
}

/* ---- threads --------------------------------------------------------------------------------------------- */

#define THREADS 4
#define RUNS_PER_THREAD 2

struct shared {
    lm_engine *engine;
    char *greedy_text;  /* the single-thread results every thread must reproduce */
    char *sampled_text;
};

static lm_run_params sampled_params(void) {
    lm_run_params rp = quick_params();
    rp.greedy = false;
    rp.temperature = 1.5f;
    rp.top_k = 0;
    rp.top_p = 1.0f;
    rp.seed = 7;
    return rp;
}

/* strdup is POSIX, not C11. */
static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

/* Runs once and returns a malloc'd copy of the text (NULL on failure, reported). */
static char *run_text(lm_engine *engine, const lm_run_params *rp) {
    lm_result *r = NULL;
    int rc = lm_run(engine, "What is 7 times 6?", rp, &r);
    if (rc != LM_OK) {
        FAIL("lm_run: %s: %s", lm_status_name(rc), lm_last_error());
        return NULL;
    }
    const char *t = lm_result_text(r);
    char *copy = t ? copy_string(t) : NULL;
    lm_result_free(r);
    return copy;
}

static void *worker(void *arg) {
    struct shared *s = arg;
    lm_run_params greedy = quick_params();
    lm_run_params sampled = sampled_params();
    for (int i = 0; i < RUNS_PER_THREAD; i++) {
        char *g = run_text(s->engine, &greedy);
        char *t = run_text(s->engine, &sampled);
        if (!g || strcmp(g, s->greedy_text) != 0) FAIL("greedy text differs under threads: %s", g ? g : "(null)");
        if (!t || strcmp(t, s->sampled_text) != 0) FAIL("sampled text differs under threads: %s", t ? t : "(null)");
        free(g);
        free(t);
    }
    /* The last error is per thread: a failure here does not show in other threads. */
    lm_result *r = NULL;
    if (lm_run(s->engine, NULL, &greedy, &r) != LM_ERR_NULL_POINTER || strstr(lm_last_error(), "question") == NULL)
        FAIL("per-thread last error: %s", lm_last_error());
    return NULL;
}

struct race {
    lm_engine *engine;
    atomic_int started; /* set once the first run completed: the engine is then freed mid-loop */
    int ok, invalid, other;
};

static void *race_worker(void *arg) {
    struct race *x = arg;
    lm_run_params rp = quick_params();
    for (int i = 0; i < 4; i++) {
        lm_result *r = NULL;
        int rc = lm_run(x->engine, "What is 1 plus 1?", &rp, &r);
        if (rc == LM_OK) {
            if (x->invalid) x->other++; /* a run succeeded after the handle was seen freed */
            x->ok++;
            lm_result_free(r);
            atomic_store(&x->started, 1);
        } else if (rc == LM_ERR_INVALID_HANDLE) {
            x->invalid++;
        } else {
            x->other++;
        }
        atomic_store(&x->started, 1);
    }
    return NULL;
}

static int threads(const char *model) {
    lm_engine_params ep = lm_engine_default_params();
    ep.model = model;
    struct shared s = {0};
    if (lm_engine_open(&ep, &s.engine) != LM_OK) {
        FAIL("lm_engine_open: %s", lm_last_error());
        return finish("threads");
    }
    lm_run_params greedy = quick_params();
    lm_run_params sampled = sampled_params();
    s.greedy_text = run_text(s.engine, &greedy);
    s.sampled_text = run_text(s.engine, &sampled);
    if (!s.greedy_text || !s.sampled_text) return finish("threads");

    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, &s);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    CHECK(lm_last_error_code() == 0); /* the workers' failures stayed in their threads */
    lm_engine_free(s.engine);
    CHECK(lm_last_error_code() == 0);
    free(s.greedy_text);
    free(s.sampled_text);

    /* Free an engine while another thread runs on it: every run either completes or sees a dead handle. */
    struct race x = {0};
    atomic_init(&x.started, 0);
    if (lm_engine_open(&ep, &x.engine) != LM_OK) {
        FAIL("lm_engine_open: %s", lm_last_error());
        return finish("threads");
    }
    pthread_t t;
    pthread_create(&t, NULL, race_worker, &x);
    while (!atomic_load(&x.started)) {
    }
    lm_engine_free(x.engine);
    CHECK(lm_last_error_code() == 0);
    pthread_join(t, NULL);
    CHECK(x.other == 0 && x.ok + x.invalid == 4);
    printf("race: %d runs completed, %d saw the freed handle\n", x.ok, x.invalid);
    return finish("threads");
}

/* ---- leak ------------------------------------------------------------------------------------------------ */

static int leak(const char *model) {
    lm_engine_params ep = lm_engine_default_params();
    ep.model = model;
    lm_engine *engine = NULL;
    lm_result *r = NULL;
    lm_run_params rp = quick_params();
    if (lm_engine_open(&ep, &engine) != LM_OK || lm_run(engine, "What is 1 plus 1?", &rp, &r) != LM_OK) {
        FAIL("%s", lm_last_error());
        return finish("leak");
    }
    lm_engine_free(engine); /* the result is never freed, on purpose */
    return finish("leak");
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "layout") == 0) return layout();
    if (argc == 3 && strcmp(argv[1], "errors") == 0) return errors(argv[2]);
    if (argc == 3 && strcmp(argv[1], "threads") == 0) return threads(argv[2]);
    if (argc == 3 && strcmp(argv[1], "leak") == 0) return leak(argv[2]);
    fprintf(stderr, "usage: %s layout | errors MODEL | threads MODEL | leak MODEL\n", argv[0]);
    return 2;
}
