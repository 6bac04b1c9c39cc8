/*
 * email_internal.h - what the email channel's modules share.
 */
#ifndef KEFU_EMAIL_INTERNAL_H
#define KEFU_EMAIL_INTERNAL_H

#include <stdint.h>
#include "kefu/channel.h"
#include "kefu/email.h"

typedef struct kf_email_mailbox {
    const char *name, *address, *display_name;
    int send_ack;
} kf_email_mailbox;

/* name NULL: the first enabled mailbox (outbound mail of other modules). */
int kf_email_mailbox_get(kf_db *db, kf_pool *pool, const char *name, kf_email_mailbox *mb,
                         const char **error_r);
/* [KF-000123] in a subject: the ticket id, or 0. */
uint64_t kf_email_subject_ticket(const char *subject);

/* email_admin.c: handlers of kf_email_routes */
int kf_email_h_list(kf_call *c, kf_reply *out);
int kf_email_h_put(kf_call *c, kf_reply *out);
int kf_email_h_delete(kf_call *c, kf_reply *out);
int kf_email_h_quarantine(kf_call *c, kf_reply *out);

/* compose.c: the mail for outbox row msg (Message-ID mid); NULL with *why
 * when the row cannot become mail, *transient_r 1 when a retry may help
 * (database error), 0 when it cannot. */
char *kf_email_compose(kf_pool *pool, const kf_outbound *msg, const kf_email_mailbox *mb,
                       const char *mid, const char **why, int *transient_r);

/* compose.c: the "email" adapter's files_ok(): any file. */
int kf_email_files_ok(kf_channel *ch, kf_db *db, kf_pool *pool, const char *account,
                      const json_t *files, const char **why_r, const char **error_r);

/* smtp_send.c */
void kf_email_smtp_register(const kf_config *cfg);

/*
 * imap_parse.c: message literals in a server's answer to UID FETCH ...
 * BODY.PEEK[] (t need not be NUL-terminated).  kf_imap_literal: the first
 * "BODY[] {n}\r\n<n bytes>)"; NULL when there is none whole.
 * kf_imap_literals: every "* s FETCH (... UID u ... BODY[] {n}" literal
 * matched to uids[0..k) into raws[]/lens[] (unmatched entries untouched);
 * a literal is skipped whole, so text inside a message is never protocol.
 */
const char *kf_imap_literal(const char *t, size_t tlen, size_t *len_r);
void kf_imap_literals(const char *t, size_t tlen, const uint64_t *uids, unsigned k,
                      const char **raws, size_t *lens);

/* imap_poll.c: the "email-imap" job */
void kf_email_imap_add(kf_scheduler *s, const kf_config *cfg);

/* lmtp.c */
int kf_email_lmtp_start(const kf_config *cfg, char *err, size_t errsz);
void kf_email_lmtp_stop(void);

#endif /* KEFU_EMAIL_INTERNAL_H */
