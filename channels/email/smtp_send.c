/*
 * smtp_send.c - the "email" channel adapter: outbox rows leave as mail
 * through libesmtp.
 *
 * The Message-ID is derived from the outbox row id (so a retry resends the
 * same message) and recorded in email_message_id before the first attempt,
 * so replies and bounces find their ticket.  The text itself is written by
 * compose.c.  Connection failures, 4xx replies and a MAIL refused for
 * authentication (530/534/535/538: our configuration, not the message) are
 * KF_DELIVER_RETRY; other 5xx replies KF_DELIVER_REJECTED, with the server's
 * words as the peer reply.
 *
 * STARTTLS (smtp_starttls = no|try|require) uses one OpenSSL SSL_CTX built at
 * registration, never libESMTP's own (which reads CAs from ~/.authenticate):
 * TLS client, SSL_VERIFY_PEER against tls_ca_bundle (or the system store), and
 * the name of smtp_host (a DNS name or an IP literal) checked by OpenSSL
 * itself.  The context is shared read-only by every job thread; libESMTP takes
 * its own reference per session.  A TLS failure - handshake, certificate, or
 * STARTTLS required but not offered - is KF_DELIVER_RETRY with the reason, and
 * no message is transferred.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <auth-client.h> /* after <openssl/ssl.h>: it declares smtp_starttls_set_ctx then */
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
    SSL_CTX *tls;           /* NULL when smtp_starttls = no, or when it could not be built */
    char tls_error[256];    /* why tls is NULL although STARTTLS is wanted */
} adapter;

/* The certificate error of this thread's last handshake (the verify callback
 * runs inside libESMTP's SSL_connect on the delivering thread). */
static _Thread_local char verify_error[160];

/* What the event callback saw of one session. */
struct tls_seen {
    const char *server;
    char why[256];          /* first TLS failure, "" = none */
    int tls_ok;             /* SMTP_EV_STARTTLS_OK */
};

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

static int
on_verify(int preverify_ok, X509_STORE_CTX *x)
{
    if (!preverify_ok && verify_error[0] == '\0') {
        int err = X509_STORE_CTX_get_error(x);
        snprintf(verify_error, sizeof(verify_error), "%s (depth %d)",
                 X509_verify_cert_error_string(err), X509_STORE_CTX_get_error_depth(x));
    }
    return preverify_ok;
}

/* The SSL_CTX for STARTTLS, or NULL with *why set (static text or reason). */
static SSL_CTX *
tls_ctx_build(const kf_config *cfg, char *why, size_t whysz)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(why, whysz, "SSL_CTX_new failed");
        return NULL;
    }
    /* TLS 1.2 only: libESMTP 1.1.0 polls for a reply before it flushes the
     * command it just wrote, so a TLS 1.3 NewSessionTicket arriving after the
     * handshake wakes it to wait for a reply to an EHLO it has not sent yet:
     * the session stalls until the timeout (about 1 in 100 sessions here). */
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
    const char *ca = cfg->tls_ca_bundle;
    int ok = ca && *ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
                       : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        unsigned long e = ERR_peek_last_error();
        char eb[160];
        ERR_error_string_n(e, eb, sizeof(eb));
        snprintf(why, whysz, "cannot load CA certificates from %s: %s",
                 ca && *ca ? ca : "the system store", e ? eb : "unknown error");
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* The peer must be smtp_host: OpenSSL checks the name (or the IP address)
     * during the handshake, so a wrong certificate fails there. */
    X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx);
    unsigned char addr[16];
    const char *host = cfg->smtp_host;
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
        ok = X509_VERIFY_PARAM_set1_ip_asc(vp, host);
    else {
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = X509_VERIFY_PARAM_set1_host(vp, host, 0);
    }
    if (ok != 1) {
        snprintf(why, whysz, "cannot check the certificate's name against smtp_host \"%s\"", host);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/*
 * libESMTP's events.  The TLS ones carry an int *ok that decides whether the
 * session goes on: an invalid or missing certificate is refused.  libESMTP's
 * own name check knows only DNS names (not IP addresses); OpenSSL has already
 * checked smtp_host against the certificate during the handshake, so its
 * WRONG_PEER_CERTIFICATE is accepted only when that verification passed.
 */
static void
on_event(smtp_session_t session, int event, void *arg, ...)
{
    struct tls_seen *seen = arg;
    va_list ap;
    int *ok = NULL;
    (void) session;
    va_start(ap, arg);
    switch (event) {
    case SMTP_EV_INVALID_PEER_CERTIFICATE: {
        long vr = va_arg(ap, long);
        ok = va_arg(ap, int *);
        *ok = 0;
        if (!seen->why[0])
            snprintf(seen->why, sizeof(seen->why), "certificate verify failed: %s",
                     X509_verify_cert_error_string(vr));
        break;
    }
    case SMTP_EV_NO_PEER_CERTIFICATE:
        ok = va_arg(ap, int *);
        *ok = 0;
        if (!seen->why[0])
            snprintf(seen->why, sizeof(seen->why), "the server sent no certificate");
        break;
    case SMTP_EV_WRONG_PEER_CERTIFICATE: {
        ok = va_arg(ap, int *);
        const char *name = va_arg(ap, const char *);
        SSL *ssl = va_arg(ap, SSL *);
        *ok = ssl != NULL && SSL_get_verify_result(ssl) == X509_V_OK &&
              SSL_get0_peer_certificate(ssl) != NULL;
        if (!*ok && !seen->why[0])
            snprintf(seen->why, sizeof(seen->why), "certificate name \"%s\" does not match",
                     name ? name : "");
        break;
    }
    case SMTP_EV_WEAK_CIPHER:
        (void) va_arg(ap, int);
        ok = va_arg(ap, int *);
        *ok = 0;
        if (!seen->why[0])
            snprintf(seen->why, sizeof(seen->why), "weak cipher");
        break;
    case SMTP_EV_NO_CLIENT_CERTIFICATE:
        ok = va_arg(ap, int *);
        *ok = 1; /* none is configured; the server may still accept us */
        break;
    case SMTP_EV_UNUSABLE_CLIENT_CERTIFICATE:
    case SMTP_EV_UNUSABLE_CA_LIST:
        if (!seen->why[0])
            snprintf(seen->why, sizeof(seen->why), "unusable TLS credentials");
        break;
    case SMTP_EV_EXTNA_STARTTLS:
        if (!seen->why[0])
            snprintf(seen->why, sizeof(seen->why),
                     "STARTTLS required but not offered by the server");
        break;
    case SMTP_EV_STARTTLS_OK:
        seen->tls_ok = 1;
        break;
    default:
        break;
    }
    va_end(ap);
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
    int transient = 0;
    char *text = kf_email_compose(pool, msg, &mb, mid, &why, &transient);
    if (text == NULL) {
        kf_str_puts(peer, why ? why : "the message could not be composed");
        kf_pool_destroy(&pool);
        return transient ? KF_DELIVER_RETRY : KF_DELIVER_REJECTED;
    }

    char server[300];
    snprintf(server, sizeof(server), "%s:%u", cfg->smtp_host, cfg->smtp_port);
    int want_tls = strcmp(cfg->smtp_starttls, "no") != 0;
    if (want_tls && adapter.tls == NULL) {
        /* never libESMTP's default context, never clear text instead */
        kf_str_printf(peer, "SMTP %s: STARTTLS unavailable: %s", server, adapter.tls_error);
        kf_log(KF_LOG_WARN, "email", "event=smtp-send outbox=%" PRIu64 " to=\"%s\" result=retry "
               "reply=\"%s\"", msg->id, msg->target, peer->ptr);
        kf_pool_destroy(&pool);
        return KF_DELIVER_RETRY;
    }

    smtp_session_t session = smtp_create_session();
    smtp_message_t message = smtp_add_message(session);
    struct tls_seen seen = {.server = server};
    smtp_set_eventcb(session, on_event, &seen);
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
    if (want_tls)
        smtp_starttls_set_ctx(session, adapter.tls); /* libESMTP holds its own reference */
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
    /* The Cc of a reply (compose.c wrote the header): copies, whose refusal
     * does not fail the delivery to the customer. */
    const json_t *cc = json_object_get(msg->payload, "cc"), *cv;
    size_t ci;
    json_array_foreach(cc, ci, cv) {
        const char *a = json_string_value(cv);
        if (a != NULL && strchr(a, '@') != NULL && strpbrk(a, "\r\n") == NULL)
            smtp_add_recipient(message, a);
    }

    verify_error[0] = '\0';
    ERR_clear_error();
    int started = smtp_start_session(session);
    const smtp_status_t *sent = started ? smtp_message_transfer_status(message) : NULL;
    int transferred = sent != NULL && sent->code >= 200 && sent->code < 300;
    if (!seen.why[0] && verify_error[0])
        snprintf(seen.why, sizeof(seen.why), "certificate verify failed: %s", verify_error);
    /* any other handshake failure (protocol version, ciphers): OpenSSL's reason */
    if (!seen.why[0] && want_tls && !seen.tls_ok && !transferred && ERR_peek_error() != 0) {
        char eb[160];
        ERR_error_string_n(ERR_peek_last_error(), eb, sizeof(eb));
        snprintf(seen.why, sizeof(seen.why), "%s", eb);
    }
    ERR_clear_error();
    if (seen.why[0]) {
        /* libESMTP quits at a refused certificate, a failed handshake or a missing
         * STARTTLS, before MAIL: nothing was sent */
        kf_str_printf(peer, "SMTP %s: STARTTLS failed: %s", server, seen.why);
        ds = KF_DELIVER_RETRY;
    } else if (!started) {
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
        if (code == 0) { /* the session ended before any reply to MAIL (timeout, drop) */
            char eb[256];
            const char *e = smtp_strerror(smtp_errno(), eb, sizeof(eb));
            kf_str_printf(peer, "SMTP %s: %s", server, e ? e : "no reply");
        } else
            kf_str_printf(peer, "%d %s", code, use && use->text ? use->text : "");
        while (peer->len && (peer->ptr[peer->len - 1] == '\n' || peer->ptr[peer->len - 1] == '\r'))
            peer->ptr[--peer->len] = '\0';
        /* MAIL refused for authentication (530 required, 534/538 mechanism,
         * 535 bad credentials) is our configuration's fault, never the
         * message's: retry, with the reason where the admin will look. */
        int auth_refused = use == rp && (code == 530 || code == 534 || code == 535 || code == 538);
        if (auth_refused) {
            kf_str body = KF_STR_INIT;
            kf_str_printf(&body, "SMTP %s: authentication %s: %s", server,
                          cfg->smtp_user[0] ? "as smtp_user failed" : "required (set smtp_user)",
                          peer->ptr ? peer->ptr : "");
            kf_str_reset(peer);
            kf_str_append(peer, body.ptr, body.len);
            kf_str_free(&body);
        }
        if (code >= 200 && code < 300)
            ds = KF_DELIVER_SENT;
        else if (code >= 500 && !auth_refused)
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

static const kf_channel_ops ops = {.name = "email", .deliver = deliver, .files_ok = kf_email_files_ok};

static int tls_registered;

static void
tls_free(void)
{
    SSL_CTX_free(adapter.tls);
    adapter.tls = NULL;
}

void
kf_email_smtp_register(const kf_config *cfg)
{
    static int auth_ready;
    if (!auth_ready) {
        auth_client_init();
        auth_ready = 1;
    }
    adapter.cfg = cfg;
    /* 1. The STARTTLS context, once per registration (main thread, before any
     * job thread delivers).  A context that cannot be built leaves every
     * delivery a retry with the reason: never clear text, never libESMTP's
     * default context. */
    if (adapter.tls != NULL) {
        SSL_CTX_free(adapter.tls);
        adapter.tls = NULL;
    }
    adapter.tls_error[0] = '\0';
    if (strcmp(cfg->smtp_starttls, "no") != 0) {
        adapter.tls = tls_ctx_build(cfg, adapter.tls_error, sizeof(adapter.tls_error));
        if (adapter.tls == NULL)
            kf_log(KF_LOG_ERR, "email", "event=smtp-tls-failed reason=\"%s\"", adapter.tls_error);
        if (!tls_registered) {
            /* registered after OpenSSL's own exit handler (OpenSSL is initialised by
             * now), so it runs first: handlers run in reverse order */
            atexit(tls_free);
            tls_registered = 1;
        }
    }
    /* 2. The adapter. */
    adapter.super.ops = &ops;
    adapter.super.arg = &adapter;
    kf_channel_register(&adapter.super);
}
