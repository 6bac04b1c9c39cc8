/*
 * kefu/server.h - the kefud process: I/O loops, workers, jobs, wiring.
 *
 * Threads:   kf_server_start/stop are called from main() only.
 */
#ifndef KEFU_SERVER_H
#define KEFU_SERVER_H

#include "kefu/types.h"
#include "kefu/http.h"

/* Route tables of each module, terminated by {0}. */
extern const kf_route kf_health_routes[];    /* h_health.c */
extern const kf_route kf_debug_routes[];     /* h_health.c */
extern const kf_route kf_auth_routes[];      /* h_auth.c: session login/logout, me */
extern const kf_route kf_ticket_routes[];    /* h_tickets.c: tickets, messages, merge */
extern const kf_route kf_customer_routes[];  /* h_customers.c: customers, merge */
extern const kf_route kf_admin_routes[];     /* h_admin.c: agents, queues, tokens, presence */
extern const kf_route kf_attachment_routes[];/* h_attachments.c: upload, download */
extern const kf_route kf_event_routes[];     /* h_events.c: events paging + SSE */
extern const kf_route kf_openapi_routes[];   /* h_openapi.c: /api/v1/openapi.json */
extern const kf_route kf_outbox_routes[];    /* h_outbox.c: outbox list, retry (+ debug) */
extern const kf_route kf_wechat_routes[];    /* channels/wechat: webhook, accounts admin */
extern const kf_route kf_webform_routes[];   /* channels/webform: form, public API, assets */
extern const kf_route kf_portal_routes[];    /* channels/webform: customer portal, links */
extern const kf_route kf_email_routes[];     /* channels/email: raw MIME inbound, mailboxes */

/* Every route table above, in registration order, NULL-terminated. */
extern const kf_route *const kf_all_route_tables[];

/* Background jobs of modules (outbox.c): add them to the scheduler. */
void kf_outbox_jobs_add(kf_scheduler *s, const kf_config *cfg);

/*
 * Bind, start workers, I/O threads and jobs.  The migration set is kept for
 * /readyz.  Returns KF_OK or KF_ERR with the reason in err.
 */
kf_server *kf_server_create(const kf_config *cfg, const void *migrations, char *err, size_t errsz);
int kf_server_start(kf_server *srv, char *err, size_t errsz);
/** "127.0.0.1:43817": the address actually bound. */
const char *kf_server_addr(const kf_server *srv);
/** The scheduler, to add jobs before kf_server_start(). */
kf_scheduler *kf_server_scheduler(kf_server *srv);
/** Graceful stop: stop accepting, drain in-flight calls, stop jobs, close. */
void kf_server_stop(kf_server *srv);
void kf_server_destroy(kf_server **srv);
/** 1 after kf_server_stop() began (readyz answers 503). */
int kf_server_stopping(void);
/** Migration set for readyz (set by kf_server_create). */
const void *kf_server_migrations(void);

#endif /* KEFU_SERVER_H */
