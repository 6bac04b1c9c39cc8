/*
 * kefu/email.h - the email channel: MIME in (GMime), sanitized HTML
 * (gumbo), quoted-history folding, threading, auto-reply and bounce
 * detection; raw MIME over HTTP and LMTP in; SMTP out (libesmtp).
 *
 * Modules:   mime.c (raw bytes -> kf_email_msg; pure), html_sanitize.c
 *            (allow-list sanitizer; pure), quote_fold.c (pure),
 *            email_channel.c (ingest, threading, bounces, the HTTP route,
 *            init/shutdown), smtp_send.c (the "email" adapter's deliver()),
 *            lmtp.c (RFC 2033 listener on its own thread and event_base,
 *            lmtp_workers ingest threads behind it),
 *            imap_poll.c (libcurl; the "email-imap" job), email_admin.c
 *            (mailboxes and the quarantine over the admin API).
 * Threads:   the pure functions anywhere (GMime is initialised once through
 *            kf_email_lib_init()); kf_email_ingest_raw() on HTTP worker, job
 *            and LMTP ingest threads, each with that thread's own kf_db.
 * Ownership: strings in a kf_email_msg live in the kf_pool passed in.
 * Errors:    KF_OK, KF_EINVAL with a static reason in *error_r (unparseable
 *            or over a limit), or the kf_ingest() codes.
 */
#ifndef KEFU_EMAIL_H
#define KEFU_EMAIL_H

#include <stddef.h>
#include <stdint.h>
#include "kefu/ingest.h"
#include "kefu/pool.h"
#include "kefu/types.h"

/* Limits of one message. */
typedef struct kf_email_limits {
    size_t max_size;      /* raw bytes */
    unsigned max_parts;   /* MIME parts walked */
    unsigned max_depth;   /* multipart / message nesting */
    int allow_remote_images;
    int list_id_is_bulk;  /* a List-Id header alone makes mail bulk (never acknowledged) */
} kf_email_limits;

#define KF_EMAIL_DEFAULT_LIMITS {25u * 1024 * 1024, 500, 20, 0, 0}

#define KF_EMAIL_MAX_REFS 32
#define KF_EMAIL_MAX_CC 16

typedef struct kf_email_msg {
    const char *from_addr, *from_name;  /* lower-cased address; name may be NULL */
    const char *to;                     /* first To address or NULL */
    const char *cc[KF_EMAIL_MAX_CC];    /* Cc addresses, lower-cased */
    unsigned n_cc;
    const char *subject;                /* decoded UTF-8, never NULL ("" when absent) */
    const char *message_id;             /* without <>, or NULL */
    const char *in_reply_to;            /* without <>, or NULL */
    const char *refs[KF_EMAIL_MAX_REFS]; /* References, newest last */
    unsigned n_refs;
    const char *text;                   /* UTF-8, quoted history included */
    size_t text_len;
    size_t text_fold;                   /* offset where quoted history starts (= text_len: none) */
    const char *html;                   /* sanitized, or NULL */
    kf_inbound_attachment *attachments;
    size_t n_attachments;
    int auto_submitted;                 /* auto-reply or bulk: never answer */
    const char *auto_reason;            /* "auto-submitted", "precedence", ... */
    int is_bounce;                      /* a DSN (multipart/report; report-type=delivery-status) */
    const char *bounce_ref;             /* Message-ID of the message that bounced, or NULL */
    const char *bounce_reason;          /* Diagnostic-Code / Status, or NULL */
    int recovered;                      /* 1 when broken MIME was recovered */
} kf_email_msg;

/** g_mime_init() once per process (idempotent, thread-safe). */
void kf_email_lib_init(void);
/** g_mime_shutdown(); once, at process exit. */
void kf_email_lib_shutdown(void);

/* Parse one raw message.  KF_EINVAL (with why) only when nothing usable is left. */
int kf_email_parse(kf_pool *pool, const char *raw, size_t len, const kf_email_limits *lim,
                   kf_email_msg *out, const char **error_r);

/*
 * Decode an RFC 2047 header value (and raw UTF-8 / 8-bit) to UTF-8: mixed
 * charsets, gb2312/gbk read as GB18030, unknown charsets kept readable.
 */
char *kf_email_decode_header(kf_pool *pool, const char *raw);
/* Bytes in charset to UTF-8 (NULL charset: UTF-8 if valid, else GB18030, else Latin-1). */
char *kf_email_to_utf8(kf_pool *pool, const char *charset, const char *data, size_t len,
                       size_t *len_r);

/*
 * Allow-list HTML sanitizer over gumbo: keeps a small set of formatting
 * elements and attributes; drops script/style/iframe/object/form ..., every
 * on* attribute, javascript:/data:/vbscript: URLs; remote images only when
 * allow_remote_images (cid: images always).  Returns a pool string.
 */
char *kf_html_sanitize(kf_pool *pool, const char *html, size_t len, int allow_remote_images);
/* The visible text of an HTML document (for HTML-only mail). */
char *kf_html_to_text(kf_pool *pool, const char *html, size_t len);

/*
 * Where the quoted history of a reply begins: "On ... wrote:", Outlook's
 * "-----Original Message-----", "-----原始邮件-----", a "发件人:"/"From:"
 * header block, or a run of ">" lines.  Returns len when there is none.
 */
size_t kf_quote_fold(const char *text, size_t len);

/* Ingest one raw message into mailbox (its own transaction). */
typedef struct kf_email_result {
    int duplicate, bounce, quarantined;
    uint64_t ticket_id, message_id;
} kf_email_result;
int kf_email_ingest_raw(kf_db *db, const char *mailbox, const char *raw, size_t len,
                        const char *source, kf_email_result *res, const char **error_r);
/* Mailbox name for a recipient address; KF_ENOTFOUND when none. */
int kf_email_mailbox_for(kf_db *db, kf_pool *pool, const char *address, char **name_r,
                         const char **error_r);

/* Outbound: the Message-ID Kefu gives outbox row id (stable across retries). */
void kf_email_outbound_message_id(uint64_t outbox_id, const char *domain, char *buf, size_t bufsz);

/* The route table (POST /api/v1/inbound/email/{mailbox}) is in kefu/server.h. */

/** Register the "email" adapter and start the LMTP listener (if configured); KF_ERR + err. */
int kf_email_init(kf_scheduler *s, const kf_config *cfg, char *err, size_t errsz);
/** Stop the LMTP listener (before the scheduler and workers stop). */
void kf_email_shutdown(void);

/** `kefud admin mailbox put|list|delete ...` (email_admin.c); exit code 0/1/2. */
int kf_email_admin_cli(const kf_config *cfg, int argc, char **argv);

#endif /* KEFU_EMAIL_H */
