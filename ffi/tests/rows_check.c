/*
 * rows_check.c: checks of the row API (tokenize, rows, prefill, latent steps, streaming decode) that
 * crates/capi/tests/ffi.rs builds and runs.
 *
 *     rows_check rows MODEL      every row call: good paths, NULLs, bad sizes, a full KV buffer, a too-long
 *                                prompt, a caller stop, an abort mid-decode (then the engine still works);
 *                                lm_run's progress callback, its streaming and aborts, and lm_run beside a
 *                                live row
 *     rows_check threads MODEL   4 threads share one engine, each driving its own row; every thread gets the
 *                                single-thread greedy tokens
 *
 * The exit status is the number of failed checks (capped at 100).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

enum { MAX_TOKENS = 4096, MAX_NEW = 6, LATENT = 2 };

/* What the token callback saw. */
typedef struct {
    int32_t ids[64];
    int n;
    char text[4096];
    int stop_after;  /* on_token returns false after this many tokens (0: never) */
    int abort_after; /* should_abort returns true once this many tokens were seen (0: never) */
    int polls;
} stream;

static bool on_token(int32_t token, const char *piece, void *user) {
    stream *s = user;
    if (s->n < 64) s->ids[s->n] = token;
    s->n++;
    strncat(s->text, piece, sizeof s->text - strlen(s->text) - 1);
    return !(s->stop_after && s->n >= s->stop_after);
}

static bool should_abort(void *user) {
    stream *s = user;
    s->polls++;
    return s->abort_after && s->n >= s->abort_after;
}

/* What the progress callback saw. */
typedef struct {
    int prefills, latents, decodes, last_agent, latent_work, decode_work, out_of_order;
} progress_log;

static void on_progress(int32_t agent, lm_phase phase, int32_t work, void *user) {
    progress_log *p = user;
    if (agent < p->last_agent) p->out_of_order++;
    p->last_agent = agent;
    if (phase == LM_PHASE_PREFILL) p->prefills++;
    if (phase == LM_PHASE_LATENT) {
        p->latents++;
        p->latent_work = work;
    }
    if (phase == LM_PHASE_DECODE) {
        p->decodes++;
        p->decode_work = work;
    }
}

/* a and b equal once leading and trailing whitespace is cut off both. */
static bool trimmed_equal(const char *a, const char *b) {
    while (*a == ' ' || *a == '\n' || *a == '\t' || *a == '\r') a++;
    while (*b == ' ' || *b == '\n' || *b == '\t' || *b == '\r') b++;
    size_t na = strlen(a), nb = strlen(b);
    while (na && strchr(" \n\t\r", a[na - 1])) na--;
    while (nb && strchr(" \n\t\r", b[nb - 1])) nb--;
    return na == nb && memcmp(a, b, na) == 0;
}

static lm_sampling_params greedy(void) {
    lm_sampling_params sp = lm_sampling_default_params();
    sp.greedy = true;
    return sp;
}

static lm_engine *open_engine(const char *model, uint64_t kv_bytes, int n_threads) {
    lm_engine_params ep = lm_engine_default_params();
    ep.model = model;
    ep.device = "cpu";
    ep.kv_budget_bytes = kv_bytes;
    ep.n_threads = n_threads;
    lm_engine *e = NULL;
    if (lm_engine_open(&ep, &e) != LM_OK) FAIL("lm_engine_open(%s): %s", model, lm_last_error());
    return e;
}

/* Chat prompt -> row -> prefill -> latent steps -> decode; the row is freed. Returns the decode's status. */
static int chain(lm_engine *e, const char *question, stream *s) {
    static _Thread_local int32_t ids[MAX_TOKENS], ids2[MAX_TOKENS];
    size_t n = 0, n2 = 0;
    int rc = lm_chat_tokenize(e, "You are a careful solver.", question, ids, MAX_TOKENS, &n);
    if (rc == LM_OK) rc = lm_chat_tokenize(e, NULL, "Answer now.", ids2, MAX_TOKENS, &n2);
    if (rc != LM_OK) return rc;
    lm_row *row = NULL;
    rc = lm_row_create(e, (uint32_t)(n + LATENT + n2 + MAX_NEW), &row);
    if (rc != LM_OK) return rc;
    if ((rc = lm_row_prefill(row, ids, n)) == LM_OK && (rc = lm_row_latent(row, LATENT, NULL, 0)) == LM_OK &&
        (rc = lm_row_prefill(row, ids2, n2)) == LM_OK) {
        lm_sampling_params sp = greedy();
        int32_t got = -1;
        rc = lm_row_decode(row, &sp, MAX_NEW, on_token, should_abort, s, &got);
        if (got != s->n) FAIL("n_generated = %d but the callback saw %d tokens", got, s->n);
    }
    if (rc != LM_OK && rc != LM_ERR_ABORTED) fprintf(stderr, "chain: %s\n", lm_last_error());
    lm_row_free(row);
    return rc;
}

static int rows(const char *model) {
    CHECK(lm_abi_version() == LM_ABI_VERSION);
    /* A buffer of 1024 tokens, smaller than the model's context: a row of it all fills it. */
    lm_engine *e = open_engine(model, 0, 2);
    if (!e) return finish("rows");
    uint64_t kv_tokens = 0, kv_bytes = 0;
    CHECK_RC(lm_engine_kv_capacity(e, &kv_tokens, &kv_bytes), LM_OK);
    lm_engine_free(e);
    e = open_engine(model, kv_bytes / kv_tokens * 1024, 2);
    if (!e) return finish("rows");
    uint32_t d = 0, vocab = 0;
    CHECK_RC(lm_engine_dims(e, &d, &vocab), LM_OK);
    CHECK(d > 0 && vocab > 0);
    CHECK_RC(lm_engine_dims(e, NULL, &vocab), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_engine_dims(NULL, &d, &vocab), LM_ERR_NULL_POINTER);

    /* Tokenizing: size probe, short buffer, NULLs. */
    size_t n = 0;
    CHECK_RC(lm_tokenize(e, "12 plus 30", NULL, 0, &n), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("n_max = 0");
    CHECK(n > 0);
    int32_t ids[MAX_TOKENS] = {0};
    size_t n2 = 0;
    CHECK_RC(lm_tokenize(e, "12 plus 30", ids, MAX_TOKENS, &n2), LM_OK);
    CHECK(n2 == n);
    CHECK_RC(lm_tokenize(e, NULL, ids, MAX_TOKENS, &n2), LM_ERR_NULL_POINTER);
    CHECK_MESSAGE("text");
    CHECK_RC(lm_tokenize(e, "x", ids, MAX_TOKENS, NULL), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_tokenize(NULL, "x", ids, MAX_TOKENS, &n2), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_tokenize(e, "\xff", ids, MAX_TOKENS, &n2), LM_ERR_INVALID_UTF8);
    size_t chat_n = 0;
    CHECK_RC(lm_chat_tokenize(e, NULL, "What is 12 plus 30?", ids, MAX_TOKENS, &chat_n), LM_OK);
    CHECK(chat_n > n);
    CHECK_RC(lm_chat_tokenize(e, NULL, NULL, ids, MAX_TOKENS, &chat_n), LM_ERR_NULL_POINTER);
    CHECK_MESSAGE("user");

    /* Rows: bad sizes, a full buffer, NULLs, handles of the wrong kind. */
    CHECK_RC(lm_engine_kv_capacity(e, &kv_tokens, &kv_bytes), LM_OK);
    CHECK(kv_tokens == 1024);
    lm_row *row = NULL;
    CHECK_RC(lm_row_create(e, 0, &row), LM_ERR_INVALID_ARGUMENT);
    CHECK(row == NULL);
    CHECK_RC(lm_row_create(e, (uint32_t)kv_tokens + 1, &row), LM_ERR_KV_CAPACITY);
    CHECK_MESSAGE("KV buffer is full");
    CHECK_RC(lm_row_create(NULL, 8, &row), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_row_create(e, 8, NULL), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_row_create((lm_engine *)(uintptr_t)0x1234560, 8, &row), LM_ERR_INVALID_HANDLE);
    CHECK_RC(lm_row_create(e, (uint32_t)kv_tokens, &row), LM_OK);
    lm_row *second = NULL;
    CHECK_RC(lm_row_create(e, 1, &second), LM_ERR_KV_CAPACITY);
    /* A row holding the whole buffer leaves lm_run no room. */
    lm_run_params rp = lm_run_default_params();
    rp.greedy = true;
    rp.max_new_tokens = 2;
    lm_result *res = NULL;
    CHECK_RC(lm_run(e, "1+1?", &rp, &res), LM_ERR_KV_CAPACITY);
    CHECK_MESSAGE("live row(s) made by lm_row_create");
    lm_row_free(row);
    CHECK(lm_last_error_code() == LM_OK);
    CHECK_CODE(lm_row_free(row), LM_ERR_INVALID_HANDLE);
    CHECK_CODE(lm_row_free(NULL), LM_OK);
    /* The freed range serves the next row. */
    CHECK_RC(lm_row_create(e, (uint32_t)kv_tokens, &row), LM_OK);
    lm_row_free(row);
    CHECK_CODE(lm_result_free((lm_result *)e), LM_ERR_INVALID_HANDLE);

    /* One row through every phase. */
    CHECK_RC(lm_row_create(e, (uint32_t)(chat_n + 3 + MAX_NEW), &row), LM_OK);
    uint32_t len = 99, cap = 0;
    CHECK_RC(lm_row_size(row, &len, &cap), LM_OK);
    CHECK(len == 0 && cap == chat_n + 3 + MAX_NEW);
    CHECK_RC(lm_row_size(row, NULL, &cap), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_row_latent(row, 1, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("prefill");
    lm_sampling_params sp = greedy();
    CHECK_RC(lm_row_decode(row, &sp, 4, NULL, NULL, NULL, NULL), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("lm_row_prefill");
    CHECK_RC(lm_row_prefill(row, NULL, 3), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_row_prefill(row, ids, 0), LM_ERR_INVALID_ARGUMENT);
    int32_t bad[2] = {ids[0], (int32_t)vocab};
    CHECK_RC(lm_row_prefill(row, bad, 2), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("tokens[1]");
    CHECK_RC(lm_row_prefill(row, ids, cap + 1), LM_ERR_KV_CAPACITY);
    CHECK_MESSAGE("n_ctx");
    CHECK_RC(lm_row_prefill(NULL, ids, 3), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_row_prefill((lm_row *)e, ids, 3), LM_ERR_INVALID_HANDLE);
    CHECK_RC(lm_row_prefill(row, ids, chat_n), LM_OK);
    CHECK_RC(lm_row_size(row, &len, &cap), LM_OK);
    CHECK(len == chat_n);
    float *vecs = calloc((size_t)3 * d, sizeof(float));
    CHECK_RC(lm_row_latent(row, 3, vecs, (size_t)3 * d - 1), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("out_len");
    CHECK_RC(lm_row_latent(row, -1, NULL, 0), LM_ERR_INVALID_ARGUMENT);
    CHECK_RC(lm_row_latent(row, 4, NULL, 0), LM_OK); /* fits: n_ctx - chat_n = 3 + MAX_NEW */
    CHECK_RC(lm_row_size(row, &len, &cap), LM_OK);
    CHECK(len == chat_n + 4);
    lm_row_free(row);

    /* Fed vectors come out, a step at a time, nonzero. */
    CHECK_RC(lm_row_create(e, (uint32_t)(chat_n + 3), &row), LM_OK);
    CHECK_RC(lm_row_prefill(row, ids, chat_n), LM_OK);
    CHECK_RC(lm_row_latent(row, 3, vecs, (size_t)3 * d), LM_OK);
    int nonzero = 0;
    for (uint32_t i = 0; i < 3 * d; i++) nonzero += vecs[i] != 0.0f;
    CHECK(nonzero > (int)d);
    CHECK_RC(lm_row_latent(row, 1, NULL, 0), LM_ERR_KV_CAPACITY);
    CHECK_MESSAGE("n_ctx");
    lm_row_free(row);
    free(vecs);

    /* Decode: NULL params, bad max_new, a full stream, a caller stop, an abort mid-decode. */
    stream full = {0};
    CHECK_RC(chain(e, "What is 12 plus 30?", &full), LM_OK);
    CHECK(full.n >= 1 && full.n <= MAX_NEW);
    CHECK(full.polls >= 1);
    /* The streamed pieces make the text of the tokens. */
    {
        size_t need = 0;
        CHECK_RC(lm_detokenize(e, full.ids, (size_t)full.n, NULL, 0, &need), LM_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE("text_size = 0");
        char *text = malloc(need + 1);
        size_t got_bytes = 0;
        CHECK_RC(lm_detokenize(e, full.ids, (size_t)full.n, text, need, &got_bytes), LM_ERR_INVALID_ARGUMENT);
        CHECK_RC(lm_detokenize(e, full.ids, (size_t)full.n, text, need + 1, &got_bytes), LM_OK);
        CHECK(got_bytes == need && strcmp(text, full.text) == 0);
        free(text);
        CHECK_RC(lm_detokenize(e, NULL, 2, NULL, 0, &got_bytes), LM_ERR_NULL_POINTER);
        CHECK_RC(lm_detokenize(e, full.ids, 1, NULL, 0, NULL), LM_ERR_NULL_POINTER);
        int32_t bad_id = -5;
        char small[8];
        CHECK_RC(lm_detokenize(e, &bad_id, 1, small, sizeof small, &got_bytes), LM_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE("tokens[0] = -5");
    }
    stream again = {0};
    CHECK_RC(chain(e, "What is 12 plus 30?", &again), LM_OK);
    CHECK(again.n == full.n && memcmp(again.ids, full.ids, sizeof(int32_t) * (size_t)full.n) == 0);
    CHECK(strcmp(again.text, full.text) == 0);

    CHECK_RC(lm_row_create(e, (uint32_t)(chat_n + MAX_NEW), &row), LM_OK);
    CHECK_RC(lm_row_prefill(row, ids, chat_n), LM_OK);
    CHECK_RC(lm_row_decode(row, NULL, 4, NULL, NULL, NULL, NULL), LM_ERR_NULL_POINTER);
    CHECK_RC(lm_row_decode(row, &sp, 0, NULL, NULL, NULL, NULL), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("max_new");
    lm_sampling_params hot = lm_sampling_default_params();
    hot.temperature = 0.0f;
    CHECK_RC(lm_row_decode(row, &hot, 4, NULL, NULL, NULL, NULL), LM_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("temperature");
    lm_row_free(row);

    if (full.n >= 2) {
        stream stop = {0};
        stop.stop_after = 1;
        CHECK_RC(chain(e, "What is 12 plus 30?", &stop), LM_OK);
        CHECK(stop.n == 1 && stop.ids[0] == full.ids[0]);
        stream ab = {0};
        ab.abort_after = 1;
        CHECK(chain(e, "What is 12 plus 30?", &ab) == LM_ERR_ABORTED);
        CHECK(ab.n == 1 && ab.ids[0] == full.ids[0]);
    } else {
        FAIL("the greedy decode stopped after %d token(s); the stop and abort checks need 2", full.n);
    }
    /* Two rows interleaved phase by phase decode what one row alone does: each row keeps the hidden state and
     * logits of its own last call, whichever row ran since. */
    {
        static int32_t q[MAX_TOKENS], q2[MAX_TOKENS], o[MAX_TOKENS], a[MAX_TOKENS];
        size_t nq = 0, nq2 = 0, no = 0, na = 0;
        CHECK_RC(lm_chat_tokenize(e, "You are a careful solver.", "What is 12 plus 30?", q, MAX_TOKENS, &nq), LM_OK);
        CHECK_RC(lm_chat_tokenize(e, NULL, "Answer now.", a, MAX_TOKENS, &na), LM_OK);
        CHECK_RC(lm_chat_tokenize(e, NULL, "Name a colour.", o, MAX_TOKENS, &no), LM_OK);
        memcpy(q2, o, no * sizeof(int32_t));
        nq2 = no;
        lm_row *ra = NULL, *rb = NULL;
        CHECK_RC(lm_row_create(e, (uint32_t)(nq + LATENT + na + MAX_NEW), &ra), LM_OK);
        CHECK_RC(lm_row_create(e, (uint32_t)(nq2 + LATENT + na + MAX_NEW), &rb), LM_OK);
        CHECK_RC(lm_row_prefill(ra, q, nq), LM_OK);
        CHECK_RC(lm_row_prefill(rb, q2, nq2), LM_OK);
        CHECK_RC(lm_row_latent(ra, LATENT, NULL, 0), LM_OK); /* from ra's hidden state, not rb's */
        CHECK_RC(lm_row_latent(rb, LATENT, NULL, 0), LM_OK);
        CHECK_RC(lm_row_prefill(ra, a, na), LM_OK);
        CHECK_RC(lm_row_prefill(rb, a, na), LM_OK);
        /* rb's latent step asks for no logits, so the engine's workspace holds none when ra decodes. */
        CHECK_RC(lm_row_latent(rb, 1, NULL, 0), LM_OK);
        stream mixed = {0};
        int32_t got = 0;
        CHECK_RC(lm_row_decode(ra, &sp, MAX_NEW, on_token, NULL, &mixed, &got), LM_OK); /* from ra's logits */
        CHECK(mixed.n == full.n && memcmp(mixed.ids, full.ids, sizeof(int32_t) * (size_t)full.n) == 0);
        CHECK_RC(lm_row_decode(ra, &sp, MAX_NEW, NULL, NULL, NULL, NULL), LM_ERR_INVALID_ARGUMENT);
        CHECK_MESSAGE("logits");
        lm_row_free(ra);
        lm_row_free(rb);
    }

    /* After an abort the engine is usable and gives the same tokens. */
    stream after = {0};
    CHECK_RC(chain(e, "What is 12 plus 30?", &after), LM_OK);
    CHECK(after.n == full.n && memcmp(after.ids, full.ids, sizeof(int32_t) * (size_t)full.n) == 0);
    CHECK_RC(lm_run(e, "1+1?", &rp, &res), LM_OK);
    lm_result_free(res);

    /* lm_run's progress: LatentMAS sequential is 4 agents, 3 of them thinking in latent space, 1 decoding. */
    progress_log log = {0};
    rp.latent_steps = 3;
    rp.progress = on_progress;
    rp.progress_user_data = &log;
    CHECK_RC(lm_run(e, "1+1?", &rp, &res), LM_OK);
    lm_result_free(res);
    CHECK(log.prefills == 4 && log.latents == 3 && log.decodes == 1);
    CHECK(log.latent_work == 3 && log.decode_work == 2);
    CHECK(log.last_agent == 3 && log.out_of_order == 0);
    /* The callback is not kept: a run without one reports nothing more. */
    rp.progress = NULL;
    CHECK_RC(lm_run(e, "1+1?", &rp, &res), LM_OK);
    lm_result_free(res);
    CHECK(log.prefills == 4);

    /* lm_run runs in the largest free range: a live row keeps its cache and decodes what it would have. */
    {
        static int32_t q[MAX_TOKENS], a[MAX_TOKENS];
        size_t nq = 0, na = 0;
        CHECK_RC(lm_chat_tokenize(e, "You are a careful solver.", "What is 12 plus 30?", q, MAX_TOKENS, &nq), LM_OK);
        CHECK_RC(lm_chat_tokenize(e, NULL, "Answer now.", a, MAX_TOKENS, &na), LM_OK);
        lm_row *live = NULL;
        CHECK_RC(lm_row_create(e, (uint32_t)(nq + LATENT + na + MAX_NEW), &live), LM_OK);
        CHECK_RC(lm_row_prefill(live, q, nq), LM_OK);
        CHECK_RC(lm_row_latent(live, LATENT, NULL, 0), LM_OK);
        CHECK_RC(lm_row_prefill(live, a, na), LM_OK);

        /* The answer streams token by token; the pieces are the result's text (which is stripped). */
        rp.max_new_tokens = MAX_NEW;
        stream s = {0};
        rp.on_token = on_token;
        rp.user_data = &s;
        lm_result *streamed = NULL;
        CHECK_RC(lm_run(e, "What is 12 plus 30?", &rp, &streamed), LM_OK);
        CHECK(s.n >= 1 && s.n <= MAX_NEW);
        CHECK(trimmed_equal(s.text, lm_result_text(streamed)));

        stream mixed = {0};
        int32_t got = 0;
        lm_sampling_params sp = greedy();
        CHECK_RC(lm_row_decode(live, &sp, MAX_NEW, on_token, NULL, &mixed, &got), LM_OK);
        CHECK(mixed.n == full.n && memcmp(mixed.ids, full.ids, sizeof(int32_t) * (size_t)full.n) == 0);
        lm_row_free(live);

        /* An abort mid-decode (after the first answer token), from should_abort and from on_token. */
        stream ab = {0};
        ab.abort_after = 1;
        rp.should_abort = should_abort;
        rp.user_data = &ab;
        res = NULL;
        CHECK_RC(lm_run(e, "What is 12 plus 30?", &rp, &res), LM_ERR_ABORTED);
        CHECK_MESSAGE("aborted");
        CHECK(res == NULL && ab.n == 1 && ab.polls > 1);
        stream stop = {0};
        stop.stop_after = 1;
        rp.should_abort = NULL;
        rp.user_data = &stop;
        CHECK_RC(lm_run(e, "What is 12 plus 30?", &rp, &res), LM_ERR_ABORTED);
        CHECK(res == NULL && stop.n == 1);

        /* Then the engine runs the question again to the same text. */
        rp.on_token = NULL;
        rp.user_data = NULL;
        CHECK_RC(lm_run(e, "What is 12 plus 30?", &rp, &res), LM_OK);
        CHECK(strcmp(lm_result_text(res), lm_result_text(streamed)) == 0);
        lm_result_free(res);
        lm_result_free(streamed);
    }

    lm_engine_free(e);
    return finish("rows");
}

/* ---- threads --------------------------------------------------------------------------------------------- */

typedef struct {
    lm_engine *engine;
    stream want;
    int bad;
} shared;

static void *worker(void *arg) {
    shared *sh = arg;
    for (int round = 0; round < 2; round++) {
        stream s = {0};
        int rc = chain(sh->engine, "What is 12 plus 30?", &s);
        if (rc != LM_OK || s.n != sh->want.n || memcmp(s.ids, sh->want.ids, sizeof(int32_t) * (size_t)s.n) != 0 ||
            strcmp(s.text, sh->want.text) != 0)
            __atomic_add_fetch(&sh->bad, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int threads(const char *model) {
    shared sh = {0};
    sh.engine = open_engine(model, 0, 2);
    if (!sh.engine) return finish("threads");
    CHECK_RC(chain(sh.engine, "What is 12 plus 30?", &sh.want), LM_OK);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, worker, &sh) == 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    CHECK(sh.bad == 0);
    lm_engine_free(sh.engine);
    return finish("threads");
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "rows") == 0) return rows(argv[2]);
    if (argc == 3 && strcmp(argv[1], "threads") == 0) return threads(argv[2]);
    fprintf(stderr, "usage: %s rows|threads MODEL\n", argv[0]);
    return 2;
}
