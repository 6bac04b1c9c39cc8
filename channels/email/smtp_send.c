/*
 * smtp_send.c - the "email" channel adapter: outbox rows leave as mail
 * through libesmtp.
 *
 * The Message-ID is derived from the outbox row id (so a retry resends the
 * same message) and recorded in email_message_id before the first attempt,
 * so replies and bounces find their ticket.  In-Reply-To/References come
 * from the ticket's recorded Message-IDs; the subject carries [KF-000123];
 * automatic mail (acknowledgements, notifications) says Auto-Submitted.
 * Connection failures and 4xx replies are KF_DELIVER_RETRY, 5xx replies
 * KF_DELIVER_REJECTED with the server's words as the peer reply.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <auth-client.h>
#include <libesmtp.h>
#include <jansson.h>

#include "kefu/channel.h"
#include "kefu/config.h"
#include "kefu/db.h"
#include "kefu/log.h"
#include "kefu/email.h"
#include "email_internal.h"

static struct {
    kf_channel super;
    const kf_config *cfg;
} adapter;

void
kf_email_outbound_message_id(uint64_t outbox_id, const char *domain, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "kf.%" PRIu64 ".out@%s", outbox_id, domain && *domain ? domain : "kefu.invalid");
}

static double
mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void
b64(kf_str *out, const unsigned char *p, size_t n, int wrap)
{
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned) p[i] << 16;
        if (i + 1 < n)
            v |= (unsigned) p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = {b64chars[(v >> 18) & 63], b64chars[(v >> 12) & 63],
                     i + 1 < n ? b64chars[(v >> 6) & 63] : '=', i + 2 < n ? b64chars[v & 63] : '='};
        kf_str_append(out, q, 4);
        col += 4;
        if (wrap && col >= 76 && i + 3 < n) {
            kf_str_puts(out, "\r\n");
            col = 0;
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

static void
record_id(kf_db *db, const kf_outbound *msg, const char *mid)
{
    kf_stmt *st;
    const char *err;
    if (msg->ticket_id == 0 ||
        kf_db_stmt(db, "email.msgid_out",
                   "INSERT IGNORE INTO email_message_id (message_id_hdr, direction, ticket_id, "
                   "message_id, outbox_id) VALUES (?, 'out', ?, ?, ?)",
                   &st, &err) != KF_OK)
        return;
    kf_stmt_bind_cstr(st, 0, mid);
    kf_stmt_bind_u64(st, 1, msg->ticket_id);
    if (msg->message_id)
        kf_stmt_bind_u64(st, 2, msg->message_id);
    else
        kf_stmt_bind_null(st, 2);
    kf_stmt_bind_u64(st, 3, msg->id);
    kf_stmt_exec(st, &err);
}

static int
interact(auth_client_request_t request, char **result, int fields, void *arg)
{
    const kf_config *cfg = arg;
    for (int i = 0; i < fields; i++) {
        if (request[i].flags & AUTH_USER)
            result[i] = cfg->smtp_user;
        else if (request[i].flags & AUTH_PASS)
            result[i] = cfg->smtp_password;
        else
            return 0;
    }
    return 1;
}

/* Build the RFC 5322 text; NULL with *why when the row cannot become mail. */
static char *
build(kf_pool *pool, const kf_outbound *msg, const kf_email_mailbox *mb, const char *mid,
      const char **why)
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
    kf_str_printf(&m, "To: <%s>\r\nSubject: ", msg->target);
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
    char boundary[48];
    snprintf(boundary, sizeof(boundary), "=_kefu_alt_%llu", (unsigned long long) msg->id);
    kf_str_printf(&m, "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; "
                      "boundary=\"%s\"\r\n\r\n", boundary);
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
    char *r = kf_pool_strndup(pool, m.ptr, m.len);
    kf_str_free(&m);
    return r;
}

static kf_deliver_status
deliver(kf_channel *ch, const kf_outbound *msg, kf_str *peer)
{
    const kf_config *cfg = adapter.cfg;
    kf_pool *pool = kf_pool_create(8192);
    kf_email_mailbox mb;
    const char *err = NULL;
    kf_deliver_status ds;
    (void) ch;

    int rc = kf_email_mailbox_get(msg->db, pool, msg->channel_account, &mb, &err);
    if (rc == KF_ENOTFOUND) /* e.g. the web form's mail: the first mailbox sends it */
        rc = kf_email_mailbox_get(msg->db, pool, NULL, &mb, &err);
    if (rc != KF_OK) {
        kf_str_puts(peer, rc == KF_ENOTFOUND ? "no email mailbox is configured to send from"
                                             : "database unavailable");
        kf_pool_destroy(&pool);
        return KF_DELIVER_RETRY;
    }
    const char *at = strrchr(mb.address, '@');
    char mid[300];
    kf_email_outbound_message_id(msg->id, at ? at + 1 : NULL, mid, sizeof(mid));
    record_id(msg->db, msg, mid);
    const char *why = NULL;
    char *text = build(pool, msg, &mb, mid, &why);
    if (text == NULL) {
        kf_str_puts(peer, why);
        kf_pool_destroy(&pool);
        return KF_DELIVER_REJECTED;
    }

    smtp_session_t session = smtp_create_session();
    smtp_message_t message = smtp_add_message(session);
    char server[300];
    snprintf(server, sizeof(server), "%s:%u", cfg->smtp_host, cfg->smtp_port);
    smtp_set_server(session, server);
    long secs = (long) cfg->smtp_timeout;
    double left = msg->deadline - mono_now();
    if (left > 1 && left < secs)
        secs = (long) left;
    if (secs < 1)
        secs = 1;
    long ms = secs * 1000;
    smtp_set_timeout(session, Timeout_GREETING | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
    smtp_set_timeout(session, Timeout_ENVELOPE | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
    smtp_set_timeout(session, Timeout_DATA | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
    smtp_set_timeout(session, Timeout_TRANSFER | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
    smtp_set_timeout(session, Timeout_DATA2 | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
    smtp_starttls_enable(session, strcmp(cfg->smtp_starttls, "require") == 0 ? Starttls_REQUIRED
                                  : strcmp(cfg->smtp_starttls, "try") == 0   ? Starttls_ENABLED
                                                                             : Starttls_DISABLED);
    auth_context_t actx = NULL;
    if (cfg->smtp_user[0]) {
        actx = auth_create_context();
        auth_set_mechanism_flags(actx, AUTH_PLUGIN_PLAIN, 0);
        auth_set_interact_cb(actx, interact, (void *) cfg);
        smtp_auth_set_context(session, actx);
    }
    smtp_set_reverse_path(message, mb.address);
    smtp_set_message_str(message, text);
    smtp_recipient_t rcpt = smtp_add_recipient(message, msg->target);

    if (!smtp_start_session(session)) {
        char eb[256];
        const char *e = smtp_strerror(smtp_errno(), eb, sizeof(eb));
        kf_str_printf(peer, "SMTP %s: %s", server, e ? e : "connection failed");
        ds = KF_DELIVER_RETRY;
    } else {
        const smtp_status_t *rp = smtp_reverse_path_status(message);
        const smtp_status_t *rs = smtp_recipient_status(rcpt);
        const smtp_status_t *ts = smtp_message_transfer_status(message);
        const smtp_status_t *use = ts;
        if (rp && rp->code >= 400)
            use = rp;
        else if (rs && rs->code >= 400)
            use = rs;
        int code = use ? use->code : 0;
        kf_str_printf(peer, "%d %s", code, use && use->text ? use->text : "");
        while (peer->len && (peer->ptr[peer->len - 1] == '\n' || peer->ptr[peer->len - 1] == '\r'))
            peer->ptr[--peer->len] = '\0';
        if (code >= 200 && code < 300)
            ds = KF_DELIVER_SENT;
        else if (code >= 500)
            ds = KF_DELIVER_REJECTED;
        else
            ds = KF_DELIVER_RETRY;
    }
    smtp_destroy_session(session);
    if (actx)
        auth_destroy_context(actx);
    kf_log(ds == KF_DELIVER_SENT ? KF_LOG_INFO : KF_LOG_WARN, "email",
           "event=smtp-send outbox=%" PRIu64 " to=\"%s\" result=%s reply=\"%s\"", msg->id,
           msg->target, ds == KF_DELIVER_SENT ? "sent" : ds == KF_DELIVER_RETRY ? "retry" : "rejected",
           peer->ptr ? peer->ptr : "");
    kf_pool_destroy(&pool);
    return ds;
}

static const kf_channel_ops ops = {.name = "email", .deliver = deliver};

void
kf_email_smtp_register(const kf_config *cfg)
{
    static int auth_ready;
    if (!auth_ready) {
        auth_client_init();
        auth_ready = 1;
    }
    adapter.cfg = cfg;
    adapter.super.ops = &ops;
    adapter.super.arg = &adapter;
    kf_channel_register(&adapter.super);
}
