/*
 * sse.c - the live event feed: reading the event log by id with a guard
 * against out-of-order commits, the caller's scope, and the hub thread that
 * tails the log for the Server-Sent Event streams of one I/O loop.
 *
 * A hub keeps `head`, the highest id it has vetted.  Each cycle it reads
 * the events after head (one indexed range read on the primary key) and
 * hands them to every subscriber at or past head.  A subscriber behind head
 * (it resumed from an old Last-Event-ID, or its client was slow to take
 * what it had) is caught up by a second read of its own range, one
 * subscriber per cycle, so one old cursor never holds back the others.
 * Text waiting for a subscriber is capped (a quarter of sse_max_buffer);
 * past that the hub stops adding and the subscriber falls behind instead,
 * and the loop cuts off a client whose socket buffer stays too full.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kefu/auth.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/log.h"
#include "kefu/pool.h"
#include "sse.h"

/* ---- reading the log ---- */

int
kf_event_scope_load(kf_call *c, kf_event_scope *scope, const char **error_r)
{
    kf_stmt *st;
    int rc;
    size_t cap = 16, n = 0;
    uint64_t *q;

    memset(scope, 0, sizeof(*scope));
    if (c->principal.role >= KF_ROLE_SUPERVISOR) {
        scope->all = 1;
        return KF_OK;
    }
    if (c->principal.role != KF_ROLE_AGENT || c->principal.agent_id == 0)
        return KF_OK; /* sees nothing */
    if ((rc = kf_db_stmt(c->db, "event.scope_queues",
                         "SELECT queue_id FROM agent_queue WHERE agent_id = ? "
                         "ORDER BY queue_id LIMIT 10000",
                         &st, error_r)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, c->principal.agent_id);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    q = kf_pool_alloc(c->pool, cap * sizeof(*q));
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        if (n == cap) {
            uint64_t *bigger = kf_pool_alloc(c->pool, 2 * cap * sizeof(*q));
            memcpy(bigger, q, n * sizeof(*q));
            q = bigger;
            cap *= 2;
        }
        q[n++] = kf_stmt_col_u64(st, 0);
    }
    if (rc < 0)
        return rc;
    scope->queues = q;
    scope->n_queues = n;
    return KF_OK;
}

int
kf_event_visible(const kf_event_scope *scope, const kf_event_row *row)
{
    size_t lo = 0, hi;
    if (scope->all)
        return 1;
    if (!row->has_queue)
        return 0;
    hi = scope->n_queues;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (scope->queues[mid] == row->queue_id)
            return 1;
        if (scope->queues[mid] < row->queue_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

int
kf_event_head(kf_db *db, uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    *id_r = 0;
    if ((rc = kf_db_stmt(db, "event.head", "SELECT COALESCE(MAX(id), 0) FROM event", &st,
                         error_r)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = kf_stmt_fetch(st, error_r)) == 1)
        *id_r = kf_stmt_col_u64(st, 0);
    kf_stmt_done(st);
    return rc < 0 ? rc : KF_OK;
}

#define EVENT_COLS                                                                                 \
    "SELECT e.id, e.ticket_id, t.queue_id, e.kind, e.actor_kind, e.actor_id, e.data, "             \
    " DATE_FORMAT(e.created_at, '%Y-%m-%dT%H:%i:%s.%fZ'), "                                      \
    " TIMESTAMPDIFF(MICROSECOND, e.created_at, NOW(6)) "                                           \
    "FROM event e LEFT JOIN ticket t ON t.id = e.ticket_id "

int
kf_event_fetch(kf_db *db, kf_pool *pool, uint64_t after, uint64_t upto, unsigned max,
               kf_event_row **rows_r, size_t *n_r, int *more_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    size_t n = 0, fetched = 0;
    uint64_t prev = after;
    int held = 0;
    kf_event_row *rows = kf_pool_alloc(pool, (max ? max : 1) * sizeof(*rows));

    *rows_r = rows;
    *n_r = 0;
    *more_r = 0;
    if (upto == 0)
        rc = kf_db_stmt(db, "event.feed", EVENT_COLS "WHERE e.id > ? ORDER BY e.id LIMIT ?", &st,
                        error_r);
    else
        rc = kf_db_stmt(db, "event.feed_upto",
                        EVENT_COLS "WHERE e.id > ? AND e.id <= ? ORDER BY e.id LIMIT ?", &st,
                        error_r);
    if (rc != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, after);
    if (upto == 0) {
        kf_stmt_bind_u64(st, 1, max);
    } else {
        kf_stmt_bind_u64(st, 1, upto);
        kf_stmt_bind_u64(st, 2, max);
    }
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    while ((rc = kf_stmt_fetch(st, error_r)) == 1) {
        kf_event_row *r = &rows[n];
        fetched++;
        if (held)
            continue; /* drain the result */
        r->id = kf_stmt_col_u64(st, 0);
        if (upto == 0 && r->id != prev + 1 && kf_stmt_col_i64(st, 8) < KF_EVENT_GAP_GRACE_US) {
            held = 1; /* a young hole: an earlier id may still commit */
            continue;
        }
        r->has_ticket = !kf_stmt_col_null(st, 1);
        r->ticket_id = kf_stmt_col_u64(st, 1);
        r->has_queue = !kf_stmt_col_null(st, 2);
        r->queue_id = kf_stmt_col_u64(st, 2);
        r->kind = kf_stmt_col_str(st, 3, pool, NULL);
        r->actor_kind = kf_stmt_col_str(st, 4, pool, NULL);
        r->has_actor = !kf_stmt_col_null(st, 5);
        r->actor_id = kf_stmt_col_u64(st, 5);
        r->data = kf_stmt_col_str(st, 6, pool, NULL);
        r->created_at = kf_stmt_col_str(st, 7, pool, NULL);
        if (r->kind == NULL)
            r->kind = "";
        prev = r->id;
        n++;
    }
    if (rc < 0)
        return rc;
    *n_r = n;
    *more_r = !held && fetched == max;
    return KF_OK;
}

json_t *
kf_event_json(const kf_event_row *r)
{
    json_t *data = NULL;
    if (r->data != NULL)
        data = json_loads(r->data, JSON_DECODE_ANY, NULL);
    return json_pack("{s:I, s:o, s:s, s:{s:s, s:o}, s:o, s:s?}", "id", (json_int_t) r->id,
                     "ticket_id",
                     r->has_ticket ? json_integer((json_int_t) r->ticket_id) : json_null(), "kind",
                     r->kind, "actor", "kind", r->actor_kind ? r->actor_kind : "system", "id",
                     r->has_actor ? json_integer((json_int_t) r->actor_id) : json_null(), "data",
                     data ? data : json_null(), "created_at", r->created_at);
}

/* ---- stream slots ---- */

static atomic_uint slots_used;

int
kf_sse_slot_take(unsigned max)
{
    unsigned cur = atomic_load(&slots_used);
    do {
        if (cur >= max)
            return 0;
    } while (!atomic_compare_exchange_weak(&slots_used, &cur, cur + 1));
    return 1;
}

void
kf_sse_slot_release(void)
{
    atomic_fetch_sub(&slots_used, 1);
}

unsigned
kf_sse_slots_used(void)
{
    return atomic_load(&slots_used);
}

int
kf_sse_accept(kf_call *c, kf_reply *out, const kf_sse_spec *spec)
{
    static const char opening[] = "retry: 3000\n: kefu event stream\n\n";
    kf_sse_spec *copy = kf_pool_alloc(c->pool, sizeof(*copy));
    *copy = *spec;
    if (spec->scope.n_queues > 0) {
        uint64_t *q = kf_pool_alloc(c->pool, spec->scope.n_queues * sizeof(*q));
        memcpy(q, spec->scope.queues, spec->scope.n_queues * sizeof(*q));
        copy->scope.queues = q;
    }
    copy->who = kf_pool_strdup(c->pool, spec->who ? spec->who : "-");
    c->_stream = copy;
    return kf_reply_text(out, c, 200, "text/event-stream; charset=utf-8", opening,
                         sizeof(opening) - 1);
}

/* ---- the hub ---- */

struct kf_sse_sub {
    kf_sse_sub *prev, *next;
    uint64_t cursor;           /* every event <= cursor was handled */
    int all;
    uint64_t *queues;
    size_t n_queues;
    kf_str pending;            /* SSE text the loop has not taken yet */
};

struct kf_sse_hub {
    const kf_config *cfg;
    void (*wake)(void *);
    void *wake_arg;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    kf_sse_sub *subs;
    uint64_t head;             /* highest id vetted and handed out */
    int head_known;
    int stop, kick, started;
    pthread_t thread;
    kf_db *db;
    size_t budget;             /* pending bytes per subscriber before it must wait */
};

kf_sse_hub *
kf_sse_hub_create(const kf_config *cfg, void (*wake)(void *), void *arg)
{
    kf_sse_hub *h = kf_xcalloc(1, sizeof(*h));
    pthread_condattr_t ca;
    h->cfg = cfg;
    h->wake = wake;
    h->wake_arg = arg;
    h->budget = cfg->sse_max_buffer / 4 > 4096 ? cfg->sse_max_buffer / 4 : 4096;
    pthread_mutex_init(&h->mtx, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &ca);
    pthread_condattr_destroy(&ca);
    h->db = kf_db_create(cfg);
    return h;
}

static void
sub_free(kf_sse_sub *s)
{
    kf_str_free(&s->pending);
    free(s->queues);
    free(s);
}

void
kf_sse_hub_destroy(kf_sse_hub **ph)
{
    kf_sse_hub *h = *ph;
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mtx);
    h->stop = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mtx);
    if (h->started)
        pthread_join(h->thread, NULL);
    for (kf_sse_sub *s = h->subs, *next; s != NULL; s = next) {
        next = s->next;
        sub_free(s);
    }
    kf_db_destroy(&h->db);
    pthread_mutex_destroy(&h->mtx);
    pthread_cond_destroy(&h->cond);
    free(h);
    *ph = NULL;
}

/* One event as an SSE message: id, event name (the kind), data (compact JSON, one line). */
static const char *
event_text(kf_pool *pool, const kf_event_row *r)
{
    json_t *j = kf_event_json(r);
    char *data = json_dumps(j, JSON_COMPACT);
    char kind[65];
    size_t i;
    json_decref(j);
    for (i = 0; r->kind[i] != '\0' && i < sizeof(kind) - 1; i++) {
        unsigned char ch = (unsigned char) r->kind[i];
        kind[i] = ch < 0x20 || ch == 0x7f ? '_' : (char) ch;
    }
    kind[i] = '\0';
    char *text = kf_pool_printf(pool, "id: %llu\nevent: %s\ndata: %s\n\n",
                                (unsigned long long) r->id, kind[0] ? kind : "message",
                                data ? data : "{}");
    free(data);
    return text;
}

static int
sub_visible(const kf_sse_sub *s, const kf_event_row *r)
{
    kf_event_scope scope = {s->all, s->queues, s->n_queues};
    return kf_event_visible(&scope, r);
}

/*
 * Hand rows (ids in (from, covered]) to the subscribers whose cursor lies in
 * [from, below): each gets the visible rows past its own cursor, in order,
 * until its pending text reaches the budget; its cursor moves to the last
 * row it was given, or to covered when it took them all.  Called with the
 * hub locked.  Returns 1 when text was added.
 */
static int
deliver(kf_sse_hub *h, kf_pool *pool, const kf_event_row *rows, const char **texts, size_t n,
        uint64_t from, uint64_t below, uint64_t covered)
{
    int added = 0;
    for (kf_sse_sub *s = h->subs; s != NULL; s = s->next) {
        int full = 0;
        if (s->cursor < from || s->cursor >= below)
            continue;
        for (size_t i = 0; i < n; i++) {
            if (rows[i].id <= s->cursor)
                continue;
            if (s->pending.len >= h->budget) {
                full = 1; /* the rest waits: this subscriber falls behind */
                break;
            }
            if (sub_visible(s, &rows[i])) {
                if (texts[i] == NULL)
                    texts[i] = event_text(pool, &rows[i]);
                kf_str_puts(&s->pending, texts[i]);
                added = 1;
            }
            s->cursor = rows[i].id;
        }
        if (!full && covered > s->cursor)
            s->cursor = covered;
    }
    return added;
}

/*
 * One cycle: the head read, then at most one catch-up read.  Called and
 * returns with the hub locked; unlocks around the database.  Returns 1 when
 * another cycle should follow at once.
 */
static int
hub_cycle(kf_sse_hub *h, int *failing)
{
    const char *error = NULL;
    kf_pool *pool = kf_pool_create(64 * 1024);
    kf_event_row *rows;
    size_t n;
    int more = 0, again = 0, added = 0, rc;

    if (!h->head_known) {
        h->head = 0;
        for (kf_sse_sub *s = h->subs; s != NULL; s = s->next)
            if (s->cursor > h->head)
                h->head = s->cursor;
        h->head_known = 1;
    }
    uint64_t after = h->head;
    pthread_mutex_unlock(&h->mtx);
    rc = kf_event_fetch(h->db, pool, after, 0, KF_SSE_BATCH, &rows, &n, &more, &error);
    pthread_mutex_lock(&h->mtx);
    if (rc != KF_OK)
        goto failed;
    if (h->head_known && h->head == after) {
        uint64_t horizon = n ? rows[n - 1].id : after;
        const char **texts = kf_pool_alloc(pool, (n ? n : 1) * sizeof(*texts));
        added |= deliver(h, pool, rows, texts, n, after, UINT64_MAX, horizon);
        h->head = horizon;
        again = more;
    }

    /* Catch up the subscriber furthest behind head that has room. */
    kf_sse_sub *lag = NULL;
    for (kf_sse_sub *s = h->subs; s != NULL; s = s->next)
        if (s->cursor < h->head && s->pending.len < h->budget &&
            (lag == NULL || s->cursor < lag->cursor))
            lag = s;
    if (lag != NULL) {
        uint64_t from = lag->cursor, upto = h->head;
        pthread_mutex_unlock(&h->mtx);
        rc = kf_event_fetch(h->db, pool, from, upto, KF_SSE_BATCH, &rows, &n, &more, &error);
        pthread_mutex_lock(&h->mtx);
        if (rc != KF_OK)
            goto failed;
        uint64_t covered = more && n ? rows[n - 1].id : upto;
        const char **texts = kf_pool_alloc(pool, (n ? n : 1) * sizeof(*texts));
        added |= deliver(h, pool, rows, texts, n, from, upto, covered);
        again = 1;
    }
    if (*failing) {
        kf_log(KF_LOG_INFO, "sse", "event=poll-recovered");
        *failing = 0;
    }
    if (added)
        h->wake(h->wake_arg);
    kf_pool_destroy(&pool);
    return again;

failed:
    if (!*failing)
        kf_log(KF_LOG_WARN, "sse", "event=poll-failed reason=\"%s\"", error ? error : "-");
    *failing = 1;
    if (added)
        h->wake(h->wake_arg);
    kf_pool_destroy(&pool);
    return 0;
}

static void *
hub_main(void *arg)
{
    kf_sse_hub *h = arg;
    int failing = 0;

    pthread_mutex_lock(&h->mtx);
    while (!h->stop) {
        if (h->subs == NULL) {
            pthread_cond_wait(&h->cond, &h->mtx);
            continue;
        }
        h->kick = 0;
        int again = hub_cycle(h, &failing);
        if (h->stop)
            break;
        if ((!again || failing) && !h->kick) {
            struct timespec ts;
            long ms = failing ? 1000 : KF_SSE_POLL_MS;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += ms / 1000;
            ts.tv_nsec += (ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&h->cond, &h->mtx, &ts);
        }
    }
    pthread_mutex_unlock(&h->mtx);
    return NULL;
}

kf_sse_sub *
kf_sse_subscribe(kf_sse_hub *h, const kf_sse_spec *spec)
{
    kf_sse_sub *s = kf_xcalloc(1, sizeof(*s));
    s->cursor = spec->after;
    s->all = spec->scope.all;
    if (spec->scope.n_queues > 0) {
        s->queues = kf_xcalloc(spec->scope.n_queues, sizeof(*s->queues));
        memcpy(s->queues, spec->scope.queues, spec->scope.n_queues * sizeof(*s->queues));
        s->n_queues = spec->scope.n_queues;
    }
    pthread_mutex_lock(&h->mtx);
    s->next = h->subs;
    if (h->subs != NULL)
        h->subs->prev = s;
    h->subs = s;
    if (!h->started) {
        int e = pthread_create(&h->thread, NULL, hub_main, h);
        if (e != 0)
            kf_panic("cannot start the SSE hub thread: %s", strerror(e));
        h->started = 1;
    }
    h->kick = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mtx);
    return s;
}

void
kf_sse_unsubscribe(kf_sse_hub *h, kf_sse_sub **ps)
{
    kf_sse_sub *s = *ps;
    if (s == NULL)
        return;
    pthread_mutex_lock(&h->mtx);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h->subs = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    if (h->subs == NULL)
        h->head_known = 0; /* the next subscriber decides where the tail starts */
    pthread_mutex_unlock(&h->mtx);
    sub_free(s);
    *ps = NULL;
}

size_t
kf_sse_take(kf_sse_hub *h, kf_sse_sub *s, kf_str *out)
{
    size_t n;
    pthread_mutex_lock(&h->mtx);
    *out = s->pending;
    n = s->pending.len;
    memset(&s->pending, 0, sizeof(s->pending));
    pthread_mutex_unlock(&h->mtx);
    return n;
}
