/*
 * libFuzzer: list query strings and cursors (kf_ticket_query_parse,
 * kf_customer_query_parse, the keyset cursors, ISO-8601 times) and the
 * list SQL builder fed with whatever the parser accepted.
 *
 * Invariants: what decodes re-encodes to the same values; an accepted time
 * survives the round trip through its SQL form; the SQL text has exactly
 * as many placeholders as the prepare step binds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/customer.h"
#include "kefu/pool.h"
#include "kefu/ticket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned
placeholders(const kf_ticket_query *q)
{
    unsigned n = 1; /* LIMIT */
    n += q->tag != NULL;
    n += q->scope_agent_id != 0;
    n += q->queue_id != 0;
    for (unsigned s = q->statuses; s; s &= s - 1)
        n++;
    n += q->assignee == KF_ASSIGNEE_ID;
    n += q->priority != NULL;
    n += q->customer_id != 0;
    n += q->has_since;
    n += q->has_after ? 3 : 0;
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    kf_pool *pool = kf_pool_create(4096);
    char *s = kf_pool_strndup(pool, (const char *) data, size);
    json_t *errors = NULL;
    kf_ticket_query q;
    kf_customer_query cq;
    int64_t usec, u2;
    uint64_t id, id2;

    if (kf_ticket_query_parse(pool, s, &q, &errors) == KF_OK) {
        kf_str sql = KF_STR_INIT;
        char name[64];
        if (errors != NULL)
            abort();
        q.scope_agent_id = size & 1;
        kf_ticket_list_sql(&q, size & 2, &sql, name, sizeof(name));
        unsigned marks = 0;
        for (const char *p = sql.ptr; *p; p++)
            marks += *p == '?';
        if (marks != placeholders(&q) || strncmp(name, "ticket.list:", 12) != 0)
            abort();
        kf_str_free(&sql);
    } else if (errors == NULL) {
        abort(); /* a refusal always names what is wrong */
    }
    json_decref(errors);
    errors = NULL;
    if (kf_customer_query_parse(pool, s, &cq, &errors) == KF_OK && errors != NULL)
        abort();
    json_decref(errors);

    if (kf_ticket_cursor_decode(s, &usec, &id) == KF_OK) {
        char *again = kf_ticket_cursor_encode(pool, usec, id);
        if (kf_ticket_cursor_decode(again, &u2, &id2) != KF_OK || u2 != usec || id2 != id)
            abort();
    }
    if (kf_customer_cursor_decode(s, &id) == KF_OK) {
        char *again = kf_customer_cursor_encode(pool, id);
        if (kf_customer_cursor_decode(again, &id2) != KF_OK || id2 != id)
            abort();
    }
    if (kf_ticket_time_parse(s, &usec) == KF_OK) {
        char buf[32];
        kf_ticket_time_sql(usec, buf);
        if (kf_ticket_time_parse(buf, &u2) != KF_OK || u2 != usec)
            abort();
    }
    kf_ticket_utf8_prefix(s, size, size / 2);
    kf_pool_destroy(&pool);
    return 0;
}
