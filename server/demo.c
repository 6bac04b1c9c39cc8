/*
 * demo.c - demo data for the quickstart: queues, staff, customers, tickets.
 */
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "kefu/db.h"
#include "kefu/demo.h"
#include "kefu/log.h"
#include "kefu/pool.h"

int
kf_password_hash(char *hash, size_t hashsz, const char *password)
{
    if (hashsz < crypto_pwhash_STRBYTES)
        return KF_EINVAL;
    if (crypto_pwhash_str_alg(hash, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return KF_ERR;
    return KF_OK;
}

static void
random_password(char *out, size_t n)
{
    static const char alphabet[] = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    for (size_t i = 0; i + 1 < n; i++)
        out[i] = alphabet[randombytes_uniform(sizeof(alphabet) - 1)];
    out[n - 1] = '\0';
}

struct staff {
    const char *login, *name, *email, *role;
    char password[17];
    char hash[crypto_pwhash_STRBYTES];
    uint64_t id;
};

struct demo_tx {
    struct staff staff[3];
    int created;
};

static int
exec1(kf_db *db, const char *name, const char *sql, const char **error_r, kf_stmt **st_r)
{
    int rc = kf_db_stmt(db, name, sql, st_r, error_r);
    return rc;
}

static int
insert_customer(kf_db *db, const char *name, const char *email, const char *locale,
                uint64_t *id_r, const char **error_r)
{
    kf_stmt *st;
    int rc;
    if ((rc = exec1(db, "demo.customer",
                    "INSERT INTO customer (name, primary_email, locale) VALUES (?, ?, ?)", error_r,
                    &st)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, name);
    kf_stmt_bind_cstr(st, 1, email);
    kf_stmt_bind_cstr(st, 2, locale);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    *id_r = kf_stmt_insert_id(st);
    if ((rc = exec1(db, "demo.identity",
                    "INSERT INTO customer_identity (customer_id, kind, value) VALUES (?, 'email', ?)",
                    error_r, &st)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, *id_r);
    kf_stmt_bind_cstr(st, 1, email);
    return kf_stmt_exec(st, error_r);
}

static int
insert_ticket(kf_db *db, const char *subject, const char *status, const char *priority,
              const char *channel, uint64_t customer, uint64_t queue, uint64_t assignee,
              const char *text, const char **error_r)
{
    kf_stmt *st;
    int rc;
    uint64_t tid;
    if ((rc = exec1(db, "demo.ticket",
                    "INSERT INTO ticket (subject, status, priority, channel, customer_id, queue_id, "
                    "assignee_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    error_r, &st)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, subject);
    kf_stmt_bind_cstr(st, 1, status);
    kf_stmt_bind_cstr(st, 2, priority);
    kf_stmt_bind_cstr(st, 3, channel);
    kf_stmt_bind_u64(st, 4, customer);
    kf_stmt_bind_u64(st, 5, queue);
    if (assignee)
        kf_stmt_bind_u64(st, 6, assignee);
    else
        kf_stmt_bind_null(st, 6);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    tid = kf_stmt_insert_id(st);
    if ((rc = exec1(db, "demo.message",
                    "INSERT INTO message (ticket_id, direction, kind, author_customer_id, channel, "
                    "body_text) VALUES (?, 'in', 'public', ?, ?, ?)",
                    error_r, &st)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, tid);
    kf_stmt_bind_u64(st, 1, customer);
    kf_stmt_bind_cstr(st, 2, channel);
    kf_stmt_bind_cstr(st, 3, text);
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if ((rc = exec1(db, "demo.event",
                    "INSERT INTO event (ticket_id, kind, actor_kind, actor_id, data) "
                    "VALUES (?, 'ticket.created', 'customer', ?, JSON_OBJECT('channel', ?))",
                    error_r, &st)) != KF_OK)
        return rc;
    kf_stmt_bind_u64(st, 0, tid);
    kf_stmt_bind_u64(st, 1, customer);
    kf_stmt_bind_cstr(st, 2, channel);
    return kf_stmt_exec(st, error_r);
}

static int
demo_tx(kf_db *db, void *arg, const char **error_r)
{
    struct demo_tx *t = arg;
    kf_stmt *st;
    int rc;
    uint64_t q_general, q_billing, c[4];

    t->created = 0;
    /* 1. Once only: the marker row is inserted in this same transaction. */
    if ((rc = exec1(db, "demo.marker",
                    "INSERT IGNORE INTO kefu_meta (k, v) VALUES ('demo_loaded', '1')", error_r,
                    &st)) != KF_OK ||
        (rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    if (kf_stmt_affected(st) == 0)
        return KF_OK;

    /* 2. Queues. */
    if ((rc = exec1(db, "demo.queue", "INSERT INTO queue (name, slug, description) VALUES (?, ?, ?)",
                    error_r, &st)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, "General support");
    kf_stmt_bind_cstr(st, 1, "general");
    kf_stmt_bind_cstr(st, 2, "Questions, how-tos and everything else");
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    q_general = kf_stmt_insert_id(st);
    if ((rc = exec1(db, "demo.queue", "INSERT INTO queue (name, slug, description) VALUES (?, ?, ?)",
                    error_r, &st)) != KF_OK)
        return rc;
    kf_stmt_bind_cstr(st, 0, "Billing");
    kf_stmt_bind_cstr(st, 1, "billing");
    kf_stmt_bind_cstr(st, 2, "Invoices, refunds and plans");
    if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
        return rc;
    q_billing = kf_stmt_insert_id(st);

    /* 3. Staff, each a member of both queues. */
    for (size_t i = 0; i < KF_ARRAY_LEN(t->staff); i++) {
        struct staff *s = &t->staff[i];
        if ((rc = exec1(db, "demo.agent",
                        "INSERT INTO agent (login, display_name, email, role, password_hash) "
                        "VALUES (?, ?, ?, ?, ?)",
                        error_r, &st)) != KF_OK)
            return rc;
        kf_stmt_bind_cstr(st, 0, s->login);
        kf_stmt_bind_cstr(st, 1, s->name);
        kf_stmt_bind_cstr(st, 2, s->email);
        kf_stmt_bind_cstr(st, 3, s->role);
        kf_stmt_bind_cstr(st, 4, s->hash);
        if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
            return rc;
        s->id = kf_stmt_insert_id(st);
        uint64_t qs[2] = {q_general, q_billing};
        for (int k = 0; k < 2; k++) {
            if ((rc = exec1(db, "demo.agent_queue",
                            "INSERT INTO agent_queue (agent_id, queue_id) VALUES (?, ?)", error_r,
                            &st)) != KF_OK)
                return rc;
            kf_stmt_bind_u64(st, 0, s->id);
            kf_stmt_bind_u64(st, 1, qs[k]);
            if ((rc = kf_stmt_exec(st, error_r)) != KF_OK)
                return rc;
        }
    }

    /* 4. Customers and tickets. */
    if ((rc = insert_customer(db, "Alice Martin", "alice@example.com", "en", &c[0], error_r)) ||
        (rc = insert_customer(db, "王小明", "xiaoming.wang@example.cn", "zh-CN", &c[1], error_r)) ||
        (rc = insert_customer(db, "Bob Okafor", "bob@example.org", "en", &c[2], error_r)) ||
        (rc = insert_customer(db, "李娜", "li.na@example.cn", "zh-CN", &c[3], error_r)))
        return rc;
    if ((rc = insert_ticket(db, "Cannot reset my password", "open", "high", "email", c[0],
                            q_general, t->staff[0].id,
                            "Hello, the reset link in your email says it has expired. Can you "
                            "help?",
                            error_r)) ||
        (rc = insert_ticket(db, "发票抬头需要修改", "new", "normal", "wechat", c[1], q_billing, 0,
                            "你好，我上个月的发票抬头写错了，能帮我重新开一张吗？", error_r)) ||
        (rc = insert_ticket(db, "Refund for double charge", "pending", "urgent", "web", c[2],
                            q_billing, t->staff[1].id,
                            "I was charged twice for the November invoice.", error_r)) ||
        (rc = insert_ticket(db, "How do I export my data?", "solved", "low", "web", c[3], q_general,
                            t->staff[0].id, "Is there a way to export all of my tickets as CSV?",
                            error_r)))
        return rc;
    t->created = 1;
    return KF_OK;
}

int
kf_demo_load(kf_db *db, FILE *out, int *created_r, const char **error_r)
{
    struct demo_tx t = {
        .staff = {
            {.login = "agent", .name = "Ada Agent", .email = "agent@kefu.example", .role = "agent"},
            {.login = "supervisor", .name = "Sam Supervisor", .email = "supervisor@kefu.example",
             .role = "supervisor"},
            {.login = "admin", .name = "Ann Admin", .email = "admin@kefu.example", .role = "admin"},
        },
    };
    int rc;

    /* Hash outside the transaction: argon2id is slow on purpose. */
    for (size_t i = 0; i < KF_ARRAY_LEN(t.staff); i++) {
        random_password(t.staff[i].password, sizeof(t.staff[i].password));
        if (kf_password_hash(t.staff[i].hash, sizeof(t.staff[i].hash), t.staff[i].password) != KF_OK) {
            *error_r = "password hashing failed (out of memory?)";
            return KF_ERR;
        }
    }
    rc = kf_tx_run(db, demo_tx, &t, error_r);
    *created_r = rc == KF_OK && t.created;
    if (*created_r)
        for (size_t i = 0; i < KF_ARRAY_LEN(t.staff); i++)
            fprintf(out, "login=%s role=%s password=%s\n", t.staff[i].login, t.staff[i].role,
                    t.staff[i].password);
    sodium_memzero(&t, sizeof(t));
    return rc;
}
