/*
 * kefu/config.h - kefud's configuration: one declarative table.
 *
 * Sources, later wins: built-in defaults, the file named by --config (or
 * KEFU_CONFIG), then environment variables KEFU_<KEY> (upper case).  A key
 * marked secret may instead be given as <key>_file naming a file whose
 * contents (trailing newline stripped) are the value.  Every key, with its
 * default and meaning, is printed by `kefud --help` from the same table.
 *
 * Once loaded the configuration is immutable and shared read-only by all
 * threads; a change means a restart.
 *
 * Errors:    kf_config_load() returns KF_EINVAL with a message naming the
 *            key, the source (file:line or environment) and what is wrong.
 */
#ifndef KEFU_CONFIG_H
#define KEFU_CONFIG_H

#include <stdio.h>
#include "kefu/types.h"

struct kf_config {
    /* HTTP */
    char *listen;                /* host:port */
    unsigned io_threads;
    unsigned db_workers;
    unsigned job_threads;
    unsigned work_queue_max;
    unsigned http_max_headers;   /* bytes */
    unsigned http_max_body;      /* bytes, default per-route limit cap */
    unsigned http_timeout;       /* seconds, connection read/write */
    unsigned shutdown_timeout;   /* seconds */
    int reuseport;
    int debug_routes;
    /* database */
    char *db_host;
    unsigned db_port;
    char *db_socket;
    char *db_name;
    char *db_user;
    char *db_password;           /* secret */
    unsigned db_connect_timeout; /* seconds */
    unsigned db_rw_timeout;      /* seconds */
    unsigned db_tx_retries;
    /* files */
    char *sql_dir;
    char *web_dir;
    int migrate_on_start;
    /* logging */
    char *log_level;
    char *log_format;
    int access_log;
    /* auth */
    unsigned session_ttl;        /* seconds a session lives at most */
    unsigned session_idle;       /* seconds of inactivity that end a session */
    int cookie_secure;
    unsigned login_max_failures; /* failures in login_window before lockout */
    unsigned login_window;       /* seconds */
    unsigned login_lockout;      /* seconds */
    /* API */
    unsigned api_max_body;       /* JSON request bodies, bytes */
    unsigned attachment_max_bytes;
    unsigned attachment_max_count;
    unsigned reply_attachments_max_bytes; /* total of one reply's attachments */
    /* outbox */
    unsigned outbox_period_ms;
    unsigned outbox_batch;
    unsigned outbox_max_attempts;
    unsigned outbox_backoff_base; /* seconds; doubled per attempt, with jitter */
    unsigned outbox_backoff_max;  /* seconds */
    unsigned outbox_lease;        /* seconds a claimed row stays ours */
    /* live events (SSE) */
    unsigned sse_max_clients;
    unsigned sse_heartbeat;       /* seconds */
    unsigned sse_max_buffer;      /* bytes queued to one slow client before it is cut off */
    /* WeChat channel */
    unsigned wechat_timestamp_window; /* seconds a push's timestamp may be off; 0 = unchecked */
    unsigned wechat_max_body;     /* bytes of a webhook push */
    unsigned wechat_api_timeout;  /* seconds per call to the WeChat API */
    char *secrets_file;           /* "name = value" secrets (AppSecrets), mode 0600 */
    /* web form and customer portal */
    char *webform_categories;     /* "slug:Label,slug:Label": form categories = queue slugs */
    unsigned webform_rate_ip;     /* submissions per client address per window; 0 = no limit */
    unsigned webform_rate_email;  /* submissions per e-mail address per window; 0 = no limit */
    unsigned webform_rate_window; /* seconds */
    unsigned webform_min_fill;    /* seconds a person needs at least to fill the form */
    char *webform_cors_origins;   /* space/comma separated origins allowed to call the public API */
    char *webform_frame_ancestors; /* CSP frame-ancestors of the (embeddable) form pages */
    unsigned portal_token_idle;   /* seconds of inactivity after which a portal link expires */
    char *public_base_url;        /* absolute base of links in mail ("" = http://<listen>) */
    /* email channel */
    char *lmtp_listen;            /* host:port of the LMTP listener; "" = off */
    unsigned lmtp_max_size;       /* bytes of one message (LMTP SIZE, HTTP inbound) */
    unsigned lmtp_max_sessions;   /* concurrent LMTP sessions */
    unsigned lmtp_timeout;        /* seconds an LMTP client may stay idle */
    unsigned lmtp_workers;        /* ingest threads of the LMTP listener */
    char *tls_ca_bundle;          /* CA PEM for IMAP/SMTP servers; "" = system store */
    char *imap_starttls;          /* no | try | require (imap:// URLs) */
    char *smtp_host;              /* outbound SMTP relay */
    unsigned smtp_port;
    char *smtp_starttls;          /* no | try | require */
    char *smtp_user;              /* "" = no AUTH */
    char *smtp_password;          /* secret */
    unsigned smtp_timeout;        /* seconds per SMTP step */
    int html_allow_remote_images; /* keep http(s) images in sanitized mail HTML */
    int email_list_id_bulk;       /* List-Id alone makes mail bulk */
    unsigned email_auto_reply_limit; /* automatic replies per address per day; 0 = none */
    char *webform_mailbox;        /* e-mail channel account the form's mails go out from */
};

/** Fill cfg with built-in defaults (strings are heap copies). */
void kf_config_defaults(kf_config *cfg);
/*
 * Apply one "key = value" text (a whole file's contents); origin names it
 * in error messages.  Unknown keys and bad values are errors.
 */
int kf_config_parse(kf_config *cfg, const char *text, size_t len, const char *origin,
                    char *err, size_t errsz);
/** Apply environment overrides KEFU_<KEY> / KEFU_<KEY>_FILE from envp. */
int kf_config_env(kf_config *cfg, char *const *envp, char *err, size_t errsz);
/** Set one key from a string (used by the parsers and tests). */
int kf_config_set(kf_config *cfg, const char *key, const char *value, char *err, size_t errsz);
/** Cross-field checks after everything is loaded. */
int kf_config_check(const kf_config *cfg, char *err, size_t errsz);
/** Defaults, then file (may be NULL), then environment, then checks. */
int kf_config_load(kf_config *cfg, const char *path, char *const *envp, char *err, size_t errsz);
void kf_config_deinit(kf_config *cfg);
/** Print the documented table of keys (kefud --help). */
void kf_config_help(FILE *out);
/** Print the effective configuration with secrets masked. */
void kf_config_dump(const kf_config *cfg, FILE *out);

/** "host:port" with a port 1..65535 (port 0 allowed when allow_zero). */
int kf_hostport_ok(const char *s, int allow_zero);

#endif /* KEFU_CONFIG_H */
