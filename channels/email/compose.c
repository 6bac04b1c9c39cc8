/*
 * compose.c - an outbox row of the "email" channel as RFC 5322 text.
 *
 * From the mailbox's address and name, To the row's target, the subject
 * with [KF-000123] (and "Re: " on agent replies), In-Reply-To/References
 * from the ticket's recorded Message-IDs, Auto-Submitted on automatic mail,
 * UTF-8 headers as RFC 2047 words; the body multipart/alternative (text and
 * an escaped HTML rendering), wrapped in multipart/mixed with the reply's
 * attachments when it has any.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "kefu/channel.h"
#include "kefu/db.h"
#include "kefu/email.h"
#include "kefu/log.h"
#include "kefu/ticket.h"
#include "email_internal.h"

/* Base64 (libsodium's encoder); wrap: lines of 76 characters, as MIME wants. */
static void
b64(kf_str *out, const unsigned char *p, size_t n, int wrap)
{
    const size_t line = wrap ? 57 : n; /* 57 bytes -> 76 characters */
    char buf[sodium_base64_ENCODED_LEN(57, sodium_base64_VARIANT_ORIGINAL)];
    for (size_t i = 0; i < n; i += line) {
        size_t take = n - i < line ? n - i : line;
        if (i > 0)
            kf_str_puts(out, "\r\n");
        if (take <= 57) {
            sodium_bin2base64(buf, sizeof(buf), p + i, take, sodium_base64_VARIANT_ORIGINAL);
            kf_str_puts(out, buf);
        } else { /* unwrapped and long: one allocation */
            size_t cap = sodium_base64_ENCODED_LEN(take, sodium_base64_VARIANT_ORIGINAL);
            char *big = kf_xmalloc(cap);
            sodium_bin2base64(big, cap, p + i, take, sodium_base64_VARIANT_ORIGINAL);
            kf_str_puts(out, big);
            free(big);
        }
    }
}

/* A header value: as is when printable ASCII, else RFC 2047 B words cut on character boundaries. */
static void
encode_words(kf_str *out, const char *s)
{
    int ascii = 1;
    for (const char *p = s; *p; p++)
        if ((unsigned char) *p >= 0x7f || (unsigned char) *p < 0x20)
            ascii = 0;
    if (ascii && strstr(s, "=?") == NULL) {
        kf_str_puts(out, s);
        return;
    }
    size_t n = strlen(s), i = 0;
    int first = 1;
    while (i < n) {
        size_t take = 0;
        while (i + take < n && take < 42) { /* 42 bytes -> 56 base64 chars per word */
            size_t cl = 1;
            unsigned char c = (unsigned char) s[i + take];
            if (c >= 0xF0)
                cl = 4;
            else if (c >= 0xE0)
                cl = 3;
            else if (c >= 0xC0)
                cl = 2;
            if (take + cl > 42 && take > 0)
                break;
            take += cl;
        }
        if (i + take > n)
            take = n - i;
        if (!first)
            kf_str_puts(out, "\r\n ");
        kf_str_puts(out, "=?UTF-8?B?");
        b64(out, (const unsigned char *) s + i, take, 0);
        kf_str_puts(out, "?=");
        i += take;
        first = 0;
    }
}

static int
header_safe(const char *s)
{
    for (const char *p = s; *p; p++)
        if (*p == '\r' || *p == '\n')
            return 0;
    return 1;
}

static const char *
jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The ticket's Message-IDs, oldest first, for References. */
static unsigned
ticket_refs(kf_db *db, kf_pool *pool, uint64_t ticket_id, const char *mine, const char **refs,
            unsigned max, const char **last_in_r)
{
    kf_stmt *st;
    const char *err;
    unsigned n = 0;
    *last_in_r = NULL;
    if (ticket_id == 0 ||
        kf_db_stmt(db, "email.out_refs",
                   "SELECT message_id_hdr, direction FROM email_message_id WHERE ticket_id = ? "
                   "ORDER BY created_at DESC LIMIT 20",
                   &st, &err) != KF_OK)
        return 0;
    kf_stmt_bind_u64(st, 0, ticket_id);
    if (kf_stmt_exec(st, &err) != KF_OK)
        return 0;
    const char *tmp[20];
    unsigned t = 0;
    while (t < 20 && kf_stmt_fetch(st, &err) == 1) {
        char *id = kf_stmt_col_str(st, 0, pool, NULL);
        char *dir = kf_stmt_col_str(st, 1, pool, NULL);
        if (strcmp(id, mine) == 0 || !header_safe(id))
            continue;
        if (*last_in_r == NULL && strcmp(dir, "in") == 0)
            *last_in_r = id;
        tmp[t++] = id;
    }
    kf_stmt_done(st);
    for (unsigned i = t; i-- > 0 && n < max;)
        refs[n++] = tmp[i];
    return n;
}

/*
 * A MIME parameter value per RFC 2231: name="ascii" when the value is plain
 * printable ASCII without quotes, else name*0*=UTF-8''%XX...; name*1*=...
 * in pieces short enough for the 78-character line.
 */
static void
mime_param(kf_str *out, const char *name, const char *value)
{
    int plain = 1;
    for (const char *c = value; *c; c++)
        if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7f || *c == '"' || *c == '\\')
            plain = 0;
    if (plain && strlen(value) < 900) {
        kf_str_printf(out, ";\r\n %s=\"%s\"", name, value);
        return;
    }
    unsigned part = 0;
    size_t col = 0;
    for (const unsigned char *c = (const unsigned char *) value; *c || part == 0;) {
        kf_str_printf(out, ";\r\n %s*%u*=%s", name, part, part == 0 ? "UTF-8''" : "");
        col = 0;
        while (*c && col < 54) {
            /* a UTF-8 sequence stays in one piece */
            size_t cl = *c >= 0xF0 ? 4 : *c >= 0xE0 ? 3 : *c >= 0xC0 ? 2 : 1;
            for (size_t k = 0; k < cl && *c; k++, c++) {
                if (isalnum(*c) || strchr("!#$&+-.^_`|~", *c))
                    kf_str_append(out, (const char *) c, 1), col++;
                else
                    kf_str_printf(out, "%%%02X", *c), col += 3;
            }
        }
        part++;
    }
}

/*
 * The attachments of an agent reply (payload "attachments": [{id, filename,
 * content_type, size}]) as MIME parts after "--boundary".  KF_ENOTFOUND when
 * one is gone (the row cannot be sent as written), KF_ERR on a database
 * error (worth a retry).
 */
static int
attachment_parts(kf_db *db, kf_pool *pool, const json_t *list, const char *boundary, kf_str *m,
                 const char **why)
{
    size_t i;
    const json_t *a;
    kf_stmt *st;
    const char *err = NULL;
    if (kf_db_stmt(db, "email.out_chunks",
                   "SELECT data FROM attachment_chunk WHERE attachment_id = ? ORDER BY seq", &st,
                   &err) != KF_OK) {
        *why = err;
        return KF_ERR;
    }
    json_array_foreach(list, i, a) {
        uint64_t id = (uint64_t) json_integer_value(json_object_get(a, "id"));
        uint64_t size = (uint64_t) json_integer_value(json_object_get(a, "size"));
        const char *name = jstr(a, "filename"), *type = jstr(a, "content_type");
        kf_str data = KF_STR_INIT;
        int rc;
        if (name == NULL || !*name)
            name = "attachment";
        if (type == NULL || !header_safe(type) || strchr(type, '/') == NULL)
            type = "application/octet-stream";
        kf_stmt_bind_u64(st, 0, id);
        if (kf_stmt_exec(st, &err) != KF_OK) {
            *why = err;
            return KF_ERR;
        }
        while ((rc = kf_stmt_fetch(st, &err)) == 1) {
            size_t n = 0;
            kf_pool *tmp = kf_pool_create(KF_ATTACHMENT_CHUNK + 1024);
            const char *chunk = kf_stmt_col_str(st, 0, tmp, &n);
            kf_str_append(&data, chunk, n);
            kf_pool_destroy(&tmp);
        }
        kf_stmt_done(st);
        if (rc < 0) {
            kf_str_free(&data);
            *why = err;
            return KF_ERR;
        }
        if (data.len != size) {
            kf_str_free(&data);
            *why = kf_pool_printf(pool, "attachment %" PRIu64 " (%s) is missing or incomplete",
                                  id, name);
            return KF_ENOTFOUND;
        }
        /* the type's own parameters (charset) stay; name= is added */
        kf_str_printf(m, "--%s\r\nContent-Type: %s", boundary, type);
        mime_param(m, "name", name);
        kf_str_puts(m, "\r\nContent-Disposition: attachment");
        mime_param(m, "filename", name);
        kf_str_printf(m, ";\r\n size=%zu\r\nContent-Transfer-Encoding: base64\r\n\r\n", data.len);
        b64(m, (const unsigned char *) (data.ptr ? data.ptr : ""), data.len, 1);
        kf_str_puts(m, "\r\n");
        kf_str_free(&data);
    }
    return KF_OK;
}

/* Mail carries any file the ticket holds (reply_attachments_max_bytes is checked by the answer). */
int
kf_email_files_ok(kf_channel *ch, kf_db *db, kf_pool *pool, const char *account,
                  const json_t *files, const char **why_r, const char **error_r)
{
    (void) ch;
    (void) db;
    (void) pool;
    (void) account;
    (void) files;
    (void) error_r;
    *why_r = NULL;
    return KF_OK;
}

/* Build the RFC 5322 text; NULL with *why when the row cannot become mail. */
char *
kf_email_compose(kf_pool *pool, const kf_outbound *msg, const kf_email_mailbox *mb, const char *mid,
                 const char **why, int *transient_r)
{
    const json_t *p = msg->payload;
    const char *number = jstr(p, "number");
    const char *subject = jstr(p, "subject");
    const char *text = jstr(p, "text");
    int automatic = strcmp(msg->kind, "reply") != 0;
    char tok[48] = "";
    kf_str body = KF_STR_INIT, m = KF_STR_INIT;

    if (!header_safe(msg->target) || strchr(msg->target, '@') == NULL) {
        *why = "target is not a mail address";
        *transient_r = 0;
        return NULL;
    }
    if (number && *number && header_safe(number))
        snprintf(tok, sizeof(tok), "[%s]", number);
    if (subject == NULL || !*subject)
        subject = "(no subject)";
    const char *tmpl = jstr(p, "template");
    const char *locale = jstr(p, "locale");
    int zh = locale && strncasecmp(locale, "zh", 2) == 0;
    if (text == NULL && tmpl && strcmp(tmpl, "portal-signin") == 0) {
        const char *url = jstr(p, "signin_url");
        json_int_t mins = json_integer_value(json_object_get(p, "expires_in_minutes"));
        subject = zh ? "您的登录链接" : "Your sign-in link";
        text = kf_pool_printf(pool, zh ? "请点击以下链接查看您的请求（%d 分钟内有效，仅可使用一次）：\n%s\n"
                                       : "Sign in to see your requests (the link works once, for "
                                         "%d minutes):\n%s\n",
                              (int) mins, url ? url : "");
    } else if (text == NULL && tmpl && strcmp(tmpl, "webform-ack") == 0) {
        const char *url = jstr(p, "portal_url");
        const char *name = jstr(p, "customer_name");
        text = kf_pool_printf(pool, zh ? "%s%s您好：\n\n我们已收到您的请求 %s：%s\n查看进度：%s\n\n"
                                         "直接回复此邮件即可补充信息。\n"
                                       : "Hello%s%s,\n\nwe have received your request %s: %s\n"
                                         "Follow it here: %s\n\nReply to this mail to add to it.\n",
                              zh ? "" : " ", name ? name : "", number ? number : "", subject,
                              url ? url : "");
    } else if (text == NULL && strcmp(msg->kind, "ack") == 0) {
        text = kf_pool_printf(pool, zh ? "您好：\n\n我们已收到您的邮件，请求编号 %s：\n  %s\n\n"
                                         "直接回复此邮件即可补充信息（请保留主题中的 %s）。\n"
                                       : "Hello,\n\nwe have received your message and opened "
                                         "request %s:\n  %s\n\nReply to this mail to add to it; "
                                         "keep %s in the subject.\n",
                              number ? number : "", subject, tok);
    } else if (text == NULL) {
        text = "";
    }
    const char *s = subject;
    char *subj;
    if (tok[0] && strstr(subject, tok) == NULL)
        subj = kf_pool_printf(pool, "%s%s %s", automatic || !strncasecmp(s, "Re:", 3) ? "" : "Re: ",
                              tok, s);
    else
        subj = kf_pool_printf(pool, "%s%s", automatic || !strncasecmp(s, "Re:", 3) ? "" : "Re: ", s);
    for (char *c = subj; *c; c++)
        if (*c == '\r' || *c == '\n')
            *c = ' ';

    const char *refs[12], *last_in = NULL;
    unsigned n_refs = ticket_refs(msg->db, pool, msg->ticket_id, mid, refs, 12, &last_in);

    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);

    kf_str_puts(&m, "From: ");
    if (mb->display_name && *mb->display_name && header_safe(mb->display_name)) {
        encode_words(&m, mb->display_name);
        kf_str_printf(&m, " <%s>\r\n", mb->address);
    } else {
        kf_str_printf(&m, "%s\r\n", mb->address);
    }
    /* Reply-To: the mailbox, so answers come back to it whatever From a
     * relay may rewrite. */
    kf_str_printf(&m, "Reply-To: <%s>\r\nTo: <%s>\r\n", mb->address, msg->target);
    const json_t *cc = json_object_get(p, "cc"), *v;
    size_t ci, shown = 0;
    json_array_foreach(cc, ci, v) {
        const char *a = json_string_value(v);
        if (a == NULL || !header_safe(a) || strchr(a, '@') == NULL)
            continue;
        kf_str_printf(&m, "%s<%s>", shown++ ? ",\r\n " : "Cc: ", a);
    }
    if (shown)
        kf_str_puts(&m, "\r\n");
    kf_str_puts(&m, "Subject: ");
    encode_words(&m, subj);
    kf_str_printf(&m, "\r\nDate: %s\r\nMessage-ID: <%s>\r\n", date, mid);
    if (last_in)
        kf_str_printf(&m, "In-Reply-To: <%s>\r\n", last_in);
    if (n_refs) {
        kf_str_puts(&m, "References:");
        for (unsigned i = 0; i < n_refs; i++)
            kf_str_printf(&m, "%s<%s>", i ? "\r\n " : " ", refs[i]);
        kf_str_puts(&m, "\r\n");
    }
    if (automatic)
        kf_str_printf(&m, "Auto-Submitted: %s\r\nX-Auto-Response-Suppress: All\r\n",
                      strcmp(msg->kind, "ack") == 0 ? "auto-replied" : "auto-generated");
    if (tok[0])
        kf_str_printf(&m, "X-Kefu-Ticket: %s\r\n", number);
    /* multipart/alternative: the text, and the same text as HTML (escaped,
     * line breaks kept) for clients that show HTML; both base64 so any text
     * passes any relay.  The boundary holds "=_", which base64 text never
     * contains, and the outbox row's id. */
    char boundary[48], mixed[48];
    const json_t *files = json_object_get(p, "attachments");
    int with_files = json_is_array(files) && json_array_size(files) > 0;
    snprintf(boundary, sizeof(boundary), "=_kefu_alt_%llu", (unsigned long long) msg->id);
    snprintf(mixed, sizeof(mixed), "=_kefu_mix_%llu", (unsigned long long) msg->id);
    kf_str_puts(&m, "MIME-Version: 1.0\r\n");
    if (with_files)
        kf_str_printf(&m, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"
                          "This is a multi-part message in MIME format.\r\n--%s\r\n",
                      mixed, mixed);
    kf_str_printf(&m, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", boundary);
    for (const char *c = text; *c; c++) {
        if (*c == '\n' && (c == text || c[-1] != '\r'))
            kf_str_append(&body, "\r", 1);
        kf_str_append(&body, c, 1);
    }
    kf_str_printf(&m, "--%s\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                      "Content-Transfer-Encoding: base64\r\n\r\n", boundary);
    b64(&m, (const unsigned char *) (body.ptr ? body.ptr : ""), body.len, 1);
    kf_str_puts(&m, "\r\n");
    kf_str_reset(&body);
    kf_str_puts(&body, "<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"></head>"
                       "<body><div style=\"font-family:sans-serif;white-space:pre-wrap\">");
    for (const char *c = text; *c; c++) {
        switch (*c) {
        case '&': kf_str_puts(&body, "&amp;"); break;
        case '<': kf_str_puts(&body, "&lt;"); break;
        case '>': kf_str_puts(&body, "&gt;"); break;
        case '"': kf_str_puts(&body, "&quot;"); break;
        case '\r': break;
        case '\n': kf_str_puts(&body, "<br>\r\n"); break;
        default: kf_str_append(&body, c, 1);
        }
    }
    kf_str_puts(&body, "</div></body></html>\r\n");
    kf_str_printf(&m, "--%s\r\nContent-Type: text/html; charset=UTF-8\r\n"
                      "Content-Transfer-Encoding: base64\r\n\r\n", boundary);
    b64(&m, (const unsigned char *) body.ptr, body.len, 1);
    kf_str_printf(&m, "\r\n--%s--\r\n", boundary);
    kf_str_free(&body);
    if (with_files) {
        int rc = attachment_parts(msg->db, pool, files, mixed, &m, why);
        if (rc != KF_OK) {
            *transient_r = rc != KF_ENOTFOUND;
            kf_str_free(&m);
            return NULL;
        }
        kf_str_printf(&m, "--%s--\r\n", mixed);
    }
    char *r = kf_pool_strndup(pool, m.ptr, m.len);
    kf_str_free(&m);
    return r;
}

