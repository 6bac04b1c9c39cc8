/*
 * wechat_xml.c - WeChat's XML: the pushes we read and the replies we write.
 *
 * WeChat documents are flat: <xml> holding one element per field, values
 * as CDATA or plain text, order not fixed, unknown fields common.  The
 * parser (expat) keeps the top-level fields by name and nothing else.  It
 * is hardened the way untrusted XML must be: any DOCTYPE is refused before
 * its internal subset is read, so there are no entity declarations, no
 * external entities and no billion laughs; depth and element count are
 * capped; the document is read as UTF-8 whatever it declares.
 *
 * The JSON data format (a flat object) is read into the same field list.
 *
 * Pure functions: any thread.  Fuzzed by tests/fuzz/fuzz_wechat.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>
#include <jansson.h>

#include "kefu/wechat.h"

#define XML_MAX_DEPTH 16
#define XML_MAX_ELEMENTS 1000

struct xml_ctx {
    XML_Parser p;
    kf_pool *pool;
    kf_wechat_xml *x;
    unsigned depth, elements;
    const char *field;     /* the top-level element being read, or NULL */
    kf_str text;
    const char *error;
};

static void
fail(struct xml_ctx *ctx, const char *why)
{
    if (ctx->error == NULL)
        ctx->error = why;
    XML_StopParser(ctx->p, XML_FALSE);
}

static void XMLCALL
on_start(void *arg, const XML_Char *name, const XML_Char **attrs)
{
    struct xml_ctx *ctx = arg;
    (void) attrs;

    if (ctx->error != NULL)
        return;
    if (++ctx->depth > XML_MAX_DEPTH) {
        fail(ctx, "XML nested too deeply");
        return;
    }
    if (++ctx->elements > XML_MAX_ELEMENTS) {
        fail(ctx, "too many XML elements");
        return;
    }
    if (ctx->depth == 1) {
        if (strcmp(name, "xml") != 0)
            fail(ctx, "the root element must be <xml>");
        return;
    }
    if (ctx->depth == 2) {
        ctx->field = kf_pool_strdup(ctx->pool, name);
        kf_str_reset(&ctx->text);
    }
}

static void XMLCALL
on_end(void *arg, const XML_Char *name)
{
    struct xml_ctx *ctx = arg;
    kf_wechat_xml *x = ctx->x;
    (void) name;

    if (ctx->error != NULL)
        return;
    if (ctx->depth == 2 && ctx->field != NULL) {
        /* The first occurrence wins: the signature was checked over it. */
        if (kf_wechat_xml_get(x, ctx->field) == NULL && x->n < KF_WECHAT_XML_FIELDS) {
            x->f[x->n].name = ctx->field;
            x->f[x->n].value = kf_pool_strndup(ctx->pool, ctx->text.ptr ? ctx->text.ptr : "",
                                               ctx->text.len);
            x->f[x->n].len = ctx->text.len;
            x->n++;
        }
        ctx->field = NULL;
    }
    ctx->depth--;
}

static void XMLCALL
on_text(void *arg, const XML_Char *s, int len)
{
    struct xml_ctx *ctx = arg;
    /* Only a field's own text; nested elements (<ScanCodeInfo>...) are skipped. */
    if (ctx->error == NULL && ctx->depth == 2 && ctx->field != NULL && len > 0)
        kf_str_append(&ctx->text, s, (size_t) len);
}

static void XMLCALL
on_doctype(void *arg, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
           int has_internal_subset)
{
    (void) name;
    (void) sysid;
    (void) pubid;
    (void) has_internal_subset;
    fail(arg, "a DOCTYPE is not allowed");
}

static void XMLCALL
on_entity_decl(void *arg, const XML_Char *name, int is_param, const XML_Char *value, int value_len,
               const XML_Char *base, const XML_Char *sysid, const XML_Char *pubid,
               const XML_Char *notation)
{
    (void) name;
    (void) is_param;
    (void) value;
    (void) value_len;
    (void) base;
    (void) sysid;
    (void) pubid;
    (void) notation;
    fail(arg, "entity declarations are not allowed");
}

static int XMLCALL
on_external_entity(XML_Parser p, const XML_Char *context, const XML_Char *base,
                   const XML_Char *sysid, const XML_Char *pubid)
{
    (void) p;
    (void) context;
    (void) base;
    (void) sysid;
    (void) pubid;
    return XML_STATUS_ERROR;
}

int
kf_wechat_xml_parse(kf_pool *pool, const char *data, size_t len, kf_wechat_xml *x,
                    const char **error_r)
{
    struct xml_ctx ctx = {.pool = pool, .x = x};
    int rc = KF_OK;

    memset(x, 0, sizeof(*x));
    if (len > (size_t) 1 << 30) {
        *error_r = "XML document too large";
        return KF_EINVAL;
    }
    /* An explicit encoding overrides whatever the document declares. */
    if ((ctx.p = XML_ParserCreate("UTF-8")) == NULL)
        abort();
    XML_SetUserData(ctx.p, &ctx);
    XML_SetElementHandler(ctx.p, on_start, on_end);
    XML_SetCharacterDataHandler(ctx.p, on_text);
    XML_SetStartDoctypeDeclHandler(ctx.p, on_doctype);
    XML_SetEntityDeclHandler(ctx.p, on_entity_decl);
    XML_SetExternalEntityRefHandler(ctx.p, on_external_entity);
    XML_SetParamEntityParsing(ctx.p, XML_PARAM_ENTITY_PARSING_NEVER);

    if (XML_Parse(ctx.p, data, (int) len, XML_TRUE) != XML_STATUS_OK || ctx.error != NULL) {
        if (ctx.error == NULL) {
            ctx.error = XML_ErrorString(XML_GetErrorCode(ctx.p));
            if (ctx.error == NULL)
                ctx.error = "malformed XML";
        }
        *error_r = ctx.error;
        rc = KF_EINVAL;
        memset(x, 0, sizeof(*x));
    }
    XML_ParserFree(ctx.p);
    kf_str_free(&ctx.text);
    return rc;
}

/*
 * The JSON data format some WeChat callbacks use instead (mini programs,
 * the open platform, the 公众号 docs' own plaintext example): one object,
 * its top-level strings and integers taken as fields, the rest ignored.
 */
static int
json_parse(kf_pool *pool, const char *data, size_t len, kf_wechat_xml *x, const char **error_r)
{
    json_error_t e;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &e), *v;
    const char *k;

    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        *error_r = "malformed JSON";
        return KF_EINVAL;
    }
    json_object_foreach(root, k, v) {
        const char *val;
        if (x->n == KF_WECHAT_XML_FIELDS)
            break;
        if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v))
            val = kf_pool_strdup(pool, json_string_value(v));
        else if (json_is_integer(v))
            val = kf_pool_printf(pool, "%lld", (long long) json_integer_value(v));
        else
            continue;
        x->f[x->n].name = kf_pool_strdup(pool, k);
        x->f[x->n].value = val;
        x->f[x->n].len = strlen(val);
        x->n++;
    }
    json_decref(root);
    return KF_OK;
}

int
kf_wechat_doc_parse(kf_pool *pool, const char *data, size_t len, kf_wechat_xml *x,
                    const char **error_r)
{
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i < len && data[i] == '{') {
        memset(x, 0, sizeof(*x));
        return json_parse(pool, data, len, x, error_r);
    }
    return kf_wechat_xml_parse(pool, data, len, x, error_r);
}

const char *
kf_wechat_xml_get(const kf_wechat_xml *x, const char *name)
{
    for (unsigned i = 0; i < x->n; i++)
        if (strcmp(x->f[i].name, name) == 0)
            return x->f[i].value;
    return NULL;
}

/* <![CDATA[s]]>, with any "]]>" inside s split across two sections. */
static void
cdata(kf_str *out, const char *s)
{
    const char *end;

    kf_str_puts(out, "<![CDATA[");
    while ((end = strstr(s, "]]>")) != NULL) {
        kf_str_append(out, s, (size_t) (end - s));
        kf_str_puts(out, "]]]]><![CDATA[>");
        s = end + 3;
    }
    kf_str_puts(out, s);
    kf_str_puts(out, "]]>");
}

static char *
finish(kf_pool *pool, kf_str *s)
{
    char *r = kf_pool_strndup(pool, s->ptr, s->len);
    kf_str_free(s);
    return r;
}

char *
kf_wechat_reply_text(kf_pool *pool, const char *to, const char *from, long long create_time,
                     const char *content)
{
    kf_str s = KF_STR_INIT;

    kf_str_puts(&s, "<xml><ToUserName>");
    cdata(&s, to);
    kf_str_puts(&s, "</ToUserName><FromUserName>");
    cdata(&s, from);
    kf_str_printf(&s, "</FromUserName><CreateTime>%lld</CreateTime>", create_time);
    kf_str_puts(&s, "<MsgType><![CDATA[text]]></MsgType><Content>");
    cdata(&s, content);
    kf_str_puts(&s, "</Content></xml>");
    return finish(pool, &s);
}

char *
kf_wechat_envelope(kf_pool *pool, const char *encrypt, const char *signature,
                   const char *timestamp, const char *nonce)
{
    kf_str s = KF_STR_INIT;

    /* Byte for byte the official samples' layout. */
    kf_str_puts(&s, "<xml>\n<Encrypt>");
    cdata(&s, encrypt);
    kf_str_puts(&s, "</Encrypt>\n<MsgSignature>");
    cdata(&s, signature);
    kf_str_printf(&s, "</MsgSignature>\n<TimeStamp>%s</TimeStamp>\n<Nonce>", timestamp);
    cdata(&s, nonce);
    kf_str_puts(&s, "</Nonce>\n</xml>");
    return finish(pool, &s);
}
