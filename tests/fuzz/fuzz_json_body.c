/*
 * libFuzzer: JSON request bodies through the ticket and customer request
 * parsers (kf_call_json_object + the field validators of every write
 * route).  The first byte picks the route, the rest is the body.
 *
 * Invariant: a parser either accepts (no reply made) or answers a 4xx
 * problem; nothing it is fed may crash it, leak or reach the database.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The parsers are static: compile the handler files into this target. */
#include "../../server/h_tickets.c"
#include "../../server/h_customers.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The parsers read limits from the configuration (attachment_max_count ...). */
static kf_config fuzz_cfg;

static void
fuzz_cfg_free(void)
{
    kf_config_deinit(&fuzz_cfg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    kf_pool *pool = kf_pool_create(4096);
    kf_call *c = kf_pool_alloc(pool, sizeof(*c));
    unsigned sel = data[0];
    int ok = 0;

    static int cfg_ready;
    if (!cfg_ready) {
        kf_config_defaults(&fuzz_cfg);
        atexit(fuzz_cfg_free);
        cfg_ready = 1;
    }
    c->cfg = &fuzz_cfg;
    c->pool = pool;
    c->path = "/fuzz";
    c->request_id = "fuzz";
    c->params[0].key = "id";
    c->params[0].value = (sel & 0x80) ? "7" : "0"; /* a bad path id now and then */
    c->n_params = 1;
    if (sel & 0x40) {
        c->headers[0].key = "If-Match";
        c->headers[0].value = (sel & 0x20) ? "\"3\"" : "W/\"x";
        c->n_headers = 1;
    }
    c->body = kf_pool_strndup(pool, (const char *) data + 1, size - 1);
    c->body_len = size - 1;

    switch (sel % 10) {
    case 0: {
        struct create_tx t;
        ok = parse_create(c, &c->reply, &t);
        break;
    }
    case 1: {
        struct update_tx t;
        ok = parse_update(c, &c->reply, &t);
        break;
    }
    case 2:
    case 3: {
        struct answer_tx t;
        ok = parse_answer(c, &c->reply, sel % 10 == 3, &t);
        break;
    }
    case 4: {
        struct create_tx t;
        uint64_t id;
        ok = parse_inbound(c, &c->reply, &t, &id);
        break;
    }
    case 5: {
        struct merge_tx t;
        ok = parse_merge(c, &c->reply, &t);
        break;
    }
    case 6: {
        struct customer_update_tx t;
        ok = parse_customer_update(c, &c->reply, &t);
        break;
    }
    case 7: {
        struct customer_merge_tx t;
        ok = parse_customer_merge(c, &c->reply, &t);
        break;
    }
    default: {
        struct link_tx t;
        ok = parse_link(c, &c->reply, &t);
        break;
    }
    }
    if (ok ? c->reply.status != 0 : (c->reply.status < 400 || c->reply.status > 499))
        abort();
    kf_pool_destroy(&pool);
    return 0;
}
