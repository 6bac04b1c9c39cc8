-- 0002_people_tickets: queues, agents, customers and their identities, tickets,
-- messages and the append-only event log.  Times are UTC (the connection sets
-- time_zone '+00:00').  Ticket numbers are shown as KF-%06d of ticket.id.

CREATE TABLE IF NOT EXISTS queue (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    slug        VARCHAR(64)  NOT NULL,
    description VARCHAR(500) NOT NULL DEFAULT '',
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_queue_slug (slug)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS agent (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    login         VARCHAR(64)  NOT NULL,
    display_name  VARCHAR(200) NOT NULL,
    email         VARCHAR(254) NOT NULL,
    role          ENUM('agent','supervisor','admin') NOT NULL DEFAULT 'agent',
    password_hash VARCHAR(255) NOT NULL,          -- libsodium crypto_pwhash_str, argon2id
    presence      ENUM('online','away','offline') NOT NULL DEFAULT 'offline',
    capacity      INT UNSIGNED NOT NULL DEFAULT 10,
    skills        JSON NOT NULL DEFAULT ('[]'),
    active        TINYINT(1) NOT NULL DEFAULT 1,
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_agent_login (login),
    CHECK (JSON_VALID(skills))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS agent_queue (
    agent_id  BIGINT UNSIGNED NOT NULL,
    queue_id  BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (agent_id, queue_id),
    KEY ix_agent_queue_queue (queue_id),
    CONSTRAINT fk_aq_agent FOREIGN KEY (agent_id) REFERENCES agent (id) ON DELETE CASCADE,
    CONSTRAINT fk_aq_queue FOREIGN KEY (queue_id) REFERENCES queue (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS customer (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name          VARCHAR(200) NOT NULL DEFAULT '',
    primary_email VARCHAR(254) NULL,
    phone         VARCHAR(40)  NULL,
    locale        VARCHAR(16)  NOT NULL DEFAULT 'en',
    tier          VARCHAR(32)  NOT NULL DEFAULT 'standard',
    tags          JSON NOT NULL DEFAULT ('[]'),
    notes         TEXT NOT NULL DEFAULT '',
    created_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at    DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY ix_customer_email (primary_email),
    CHECK (JSON_VALID(tags))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- One person reached through several channels is one customer.
CREATE TABLE IF NOT EXISTS customer_identity (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    customer_id BIGINT UNSIGNED NOT NULL,
    kind        ENUM('email','wechat_openid','wechat_unionid','phone','web') NOT NULL,
    value       VARCHAR(254) NOT NULL,
    created_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_identity (kind, value),
    KEY ix_identity_customer (customer_id),
    CONSTRAINT fk_identity_customer FOREIGN KEY (customer_id) REFERENCES customer (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS ticket (
    id                 BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    subject            VARCHAR(255) NOT NULL,
    status             ENUM('new','open','pending','solved','closed') NOT NULL DEFAULT 'new',
    priority           ENUM('low','normal','high','urgent') NOT NULL DEFAULT 'normal',
    channel            ENUM('email','web','wechat','api','phone') NOT NULL,
    customer_id        BIGINT UNSIGNED NOT NULL,
    queue_id           BIGINT UNSIGNED NULL,
    assignee_id        BIGINT UNSIGNED NULL,
    tags               JSON NOT NULL DEFAULT ('[]'),
    created_at         DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at         DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    first_response_at  DATETIME(6) NULL,
    solved_at          DATETIME(6) NULL,
    closed_at          DATETIME(6) NULL,
    version            INT UNSIGNED NOT NULL DEFAULT 1,
    KEY ix_ticket_queue_status (queue_id, status, updated_at),
    KEY ix_ticket_assignee_status (assignee_id, status, updated_at),
    KEY ix_ticket_customer (customer_id, created_at),
    KEY ix_ticket_status_updated (status, updated_at),
    CONSTRAINT fk_ticket_customer FOREIGN KEY (customer_id) REFERENCES customer (id),
    CONSTRAINT fk_ticket_queue FOREIGN KEY (queue_id) REFERENCES queue (id),
    CONSTRAINT fk_ticket_assignee FOREIGN KEY (assignee_id) REFERENCES agent (id),
    CHECK (JSON_VALID(tags))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS message (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ticket_id        BIGINT UNSIGNED NOT NULL,
    direction        ENUM('in','out') NOT NULL,
    kind             ENUM('public','internal') NOT NULL DEFAULT 'public',
    author_agent_id  BIGINT UNSIGNED NULL,
    author_customer_id BIGINT UNSIGNED NULL,
    channel          ENUM('email','web','wechat','api','phone') NOT NULL,
    channel_account  VARCHAR(100) NOT NULL DEFAULT '',
    external_id      VARCHAR(255) NULL,
    body_text        MEDIUMTEXT NOT NULL,
    body_html        MEDIUMTEXT NULL,               -- sanitized
    created_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_message_ticket (ticket_id, created_at),
    UNIQUE KEY ux_message_external (channel, channel_account, external_id),
    CONSTRAINT fk_message_ticket FOREIGN KEY (ticket_id) REFERENCES ticket (id),
    CONSTRAINT fk_message_agent FOREIGN KEY (author_agent_id) REFERENCES agent (id),
    CONSTRAINT fk_message_customer FOREIGN KEY (author_customer_id) REFERENCES customer (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Append-only: the audit trail and the live feed (tailed by id).
CREATE TABLE IF NOT EXISTS event (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    ticket_id   BIGINT UNSIGNED NULL,
    kind        VARCHAR(64) NOT NULL,
    actor_kind  ENUM('agent','customer','system') NOT NULL DEFAULT 'system',
    actor_id    BIGINT UNSIGNED NULL,
    data        JSON NOT NULL DEFAULT ('{}'),
    created_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_event_ticket (ticket_id, id),
    CHECK (JSON_VALID(data))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
