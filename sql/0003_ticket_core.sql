-- 0003_ticket_core: what the ticket core adds on top of 0002: ticket links and
-- merges, channel accounts (default queue per account), attachments stored in
-- chunks, idempotent-ingest receipts, the transactional outbox, agent sessions,
-- API tokens and login throttling.

ALTER TABLE ticket
    ADD COLUMN IF NOT EXISTS merged_into_id   BIGINT UNSIGNED NULL AFTER assignee_id,
    ADD COLUMN IF NOT EXISTS follow_up_of_id  BIGINT UNSIGNED NULL AFTER merged_into_id,
    ADD COLUMN IF NOT EXISTS channel_account  VARCHAR(100) NOT NULL DEFAULT '' AFTER channel,
    ADD KEY IF NOT EXISTS ix_ticket_customer_status (customer_id, status, updated_at),
    ADD KEY IF NOT EXISTS ix_ticket_priority_status (priority, status, updated_at),
    ADD KEY IF NOT EXISTS ix_ticket_updated (updated_at, id);

ALTER TABLE message
    ADD COLUMN IF NOT EXISTS author_kind ENUM('agent','customer','system') NOT NULL DEFAULT 'customer' AFTER kind;

-- Channel accounts: a mailbox, a WeChat account, the web form, the API.
CREATE TABLE IF NOT EXISTS channel_account (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    channel           ENUM('email','web','wechat','api','phone') NOT NULL,
    account           VARCHAR(100) NOT NULL,
    name              VARCHAR(200) NOT NULL DEFAULT '',
    default_queue_id  BIGINT UNSIGNED NULL,
    settings          JSON NOT NULL DEFAULT ('{}'),
    created_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_channel_account (channel, account),
    CONSTRAINT fk_ca_queue FOREIGN KEY (default_queue_id) REFERENCES queue (id) ON DELETE SET NULL,
    CHECK (JSON_VALID(settings))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Attachments: metadata here, bytes in chunks so no single row is huge.
CREATE TABLE IF NOT EXISTS attachment (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ticket_id     BIGINT UNSIGNED NOT NULL,
    message_id    BIGINT UNSIGNED NULL,
    filename      VARCHAR(255) NOT NULL,
    content_type  VARCHAR(127) NOT NULL,
    size          BIGINT UNSIGNED NOT NULL,
    sha256        CHAR(64) NOT NULL,
    content_id    VARCHAR(255) NULL,              -- cid: of inline images (email)
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_attachment_ticket (ticket_id),
    KEY ix_attachment_message (message_id),
    CONSTRAINT fk_attachment_ticket FOREIGN KEY (ticket_id) REFERENCES ticket (id),
    CONSTRAINT fk_attachment_message FOREIGN KEY (message_id) REFERENCES message (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS attachment_chunk (
    attachment_id BIGINT UNSIGNED NOT NULL,
    seq           INT UNSIGNED NOT NULL,
    data          MEDIUMBLOB NOT NULL,
    PRIMARY KEY (attachment_id, seq),
    CONSTRAINT fk_chunk_attachment FOREIGN KEY (attachment_id) REFERENCES attachment (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Idempotent ingest: one row per (channel, account, external id) ever ingested.
CREATE TABLE IF NOT EXISTS inbound_receipt (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    channel          ENUM('email','web','wechat','api','phone') NOT NULL,
    channel_account  VARCHAR(100) NOT NULL,
    external_id      VARCHAR(255) NOT NULL,
    ticket_id        BIGINT UNSIGNED NOT NULL,
    message_id       BIGINT UNSIGNED NOT NULL,
    customer_id      BIGINT UNSIGNED NOT NULL,
    created_ticket   TINYINT(1) NOT NULL DEFAULT 0,
    created_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_receipt (channel, channel_account, external_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Transactional outbox: written in the same transaction as the change.
CREATE TABLE IF NOT EXISTS outbox (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind             VARCHAR(32)  NOT NULL,       -- reply, ack, notification, survey, webhook
    channel          VARCHAR(32)  NOT NULL,       -- email, wechat, web, webhook ...
    channel_account  VARCHAR(100) NOT NULL DEFAULT '',
    target           VARCHAR(500) NOT NULL,       -- address, openid, URL
    payload          JSON NOT NULL,
    status           ENUM('queued','sending','sent','dead') NOT NULL DEFAULT 'queued',
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    max_attempts     INT UNSIGNED NOT NULL DEFAULT 8,
    next_attempt_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    lease_owner      VARCHAR(100) NULL,
    lease_until      DATETIME(6) NULL,
    last_error       VARCHAR(1000) NULL,
    peer_reply       VARCHAR(1000) NULL,
    dedupe_key       VARCHAR(191) NOT NULL,
    ticket_id        BIGINT UNSIGNED NULL,
    message_id       BIGINT UNSIGNED NULL,
    created_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    sent_at          DATETIME(6) NULL,
    UNIQUE KEY ux_outbox_dedupe (dedupe_key),
    KEY ix_outbox_due (status, next_attempt_at),
    KEY ix_outbox_ticket (ticket_id),
    CHECK (JSON_VALID(payload))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Agent sessions: the cookie holds a random token; we keep its SHA-256.
CREATE TABLE IF NOT EXISTS session (
    token_hash    CHAR(64) NOT NULL PRIMARY KEY,
    agent_id      BIGINT UNSIGNED NOT NULL,
    csrf_token    CHAR(43) NOT NULL,
    ip            VARCHAR(64) NOT NULL DEFAULT '',
    user_agent    VARCHAR(255) NOT NULL DEFAULT '',
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_seen_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at    DATETIME(6) NOT NULL,
    revoked_at    DATETIME(6) NULL,
    KEY ix_session_agent (agent_id),
    KEY ix_session_expires (expires_at),
    CONSTRAINT fk_session_agent FOREIGN KEY (agent_id) REFERENCES agent (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- API tokens for integrations: shown once, stored as SHA-256, scoped to a role.
CREATE TABLE IF NOT EXISTS api_token (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name          VARCHAR(100) NOT NULL,
    token_hash    CHAR(64) NOT NULL,
    prefix        VARCHAR(16) NOT NULL,           -- first characters, to recognise it in lists
    role          ENUM('agent','supervisor','admin') NOT NULL,
    agent_id      BIGINT UNSIGNED NULL,           -- acts as this agent when set
    created_by    BIGINT UNSIGNED NULL,
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_used_at  DATETIME(6) NULL,
    expires_at    DATETIME(6) NULL,
    revoked_at    DATETIME(6) NULL,
    UNIQUE KEY ux_api_token_hash (token_hash),
    CONSTRAINT fk_token_agent FOREIGN KEY (agent_id) REFERENCES agent (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Failed logins per account and per IP: slowed, then refused for a while.
CREATE TABLE IF NOT EXISTS login_throttle (
    k             VARCHAR(200) NOT NULL PRIMARY KEY,   -- "login:<login>" or "ip:<addr>"
    failures      INT UNSIGNED NOT NULL DEFAULT 0,
    window_start  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    locked_until  DATETIME(6) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
