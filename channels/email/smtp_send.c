/*
 * smtp_send.c - the "email" channel adapter: outbox rows leave as mail
 * through libesmtp.
 *
 * The Message-ID is derived from the outbox row id (so a retry resends the
 * same message) and recorded in email_message_id before the first attempt,
 * so replies and bounces find their ticket.  The text itself is written by
 * compose.c.  Connection failures and 4xx replies are KF_DELIVER_RETRY, 5xx replies
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

static const kf_channel_ops ops = {.name = "email", .deliver = deliver, .files_ok = kf_email_files_ok};

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
