/*
 * h_openapi.c - GET /api/v1/openapi.json: the OpenAPI 3.1 document, kept in
 * web_dir/openapi.json (hand-written; a test checks that every route in the
 * route table is in it).  Read once, on a worker, then served from memory.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kefu/config.h"
#include "kefu/http.h"
#include "kefu/pool.h"
#include "kefu/server.h"

static pthread_mutex_t doc_mtx = PTHREAD_MUTEX_INITIALIZER;
static char *doc;
static size_t doc_len;

static void
free_doc(void)
{
    free(doc);
    doc = NULL;
}

static int
h_openapi(kf_call *c, kf_reply *out)
{
    pthread_mutex_lock(&doc_mtx);
    if (doc == NULL) {
        char *path = kf_pool_printf(c->pool, "%s/openapi.json", c->cfg->web_dir);
        FILE *f = fopen(path, "re");
        if (f != NULL) {
            kf_str s = KF_STR_INIT;
            char buf[8192];
            size_t n;
            while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                kf_str_append(&s, buf, n);
            fclose(f);
            doc = s.ptr;
            doc_len = s.len;
            atexit(free_doc);
        }
    }
    pthread_mutex_unlock(&doc_mtx);
    if (doc == NULL)
        return kf_reply_internal(out, c, "openapi.json not found in web_dir");
    return kf_reply_text(out, c, 200, "application/json", doc, doc_len);
}

const kf_route kf_openapi_routes[] = {
    {KF_GET, "/api/v1/openapi.json", KF_AUTH_PUBLIC, 0, h_openapi, 0, NULL},
    {0, NULL, 0, 0, NULL, 0, NULL},
};
