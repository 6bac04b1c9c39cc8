-- 0006_webform: the web form channel and the customer portal.
--
-- portal_token: the secrets behind portal access, stored as SHA-256 of the
-- token (the token itself only ever travels in a link or a cookie).
--   kind 'ticket'  the per-ticket access link /support/t/{token}; expires after
--                  portal_token_idle seconds without use; revocable by agents.
--   kind 'session' a "My requests" sign-in (cookie), made by a sign-in link.
-- portal_magic: sign-in links mailed to a customer: usable once, for 15 minutes.
-- webform_rate: fixed-window counters of the form's rate limits, shared by every
-- kefud instance (per client address and per e-mail address).

CREATE TABLE IF NOT EXISTS portal_token (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    token_hash    CHAR(64) NOT NULL,
    kind          ENUM('ticket','session') NOT NULL,
    customer_id   BIGINT UNSIGNED NOT NULL,
    ticket_id     BIGINT UNSIGNED NULL,
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_used_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    revoked_at    DATETIME(6) NULL,
    UNIQUE KEY ux_portal_token_hash (token_hash),
    KEY ix_portal_token_ticket (ticket_id),
    KEY ix_portal_token_customer (customer_id),
    CONSTRAINT fk_portal_token_ticket FOREIGN KEY (ticket_id) REFERENCES ticket (id) ON DELETE CASCADE,
    CONSTRAINT fk_portal_token_customer FOREIGN KEY (customer_id) REFERENCES customer (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS portal_magic (
    token_hash    CHAR(64) NOT NULL PRIMARY KEY,
    customer_id   BIGINT UNSIGNED NOT NULL,
    email         VARCHAR(254) NOT NULL,
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expires_at    DATETIME(6) NOT NULL,
    used_at       DATETIME(6) NULL,
    KEY ix_portal_magic_expires (expires_at),
    CONSTRAINT fk_portal_magic_customer FOREIGN KEY (customer_id) REFERENCES customer (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS webform_rate (
    k             VARCHAR(320) NOT NULL PRIMARY KEY,  -- "new:ip:<addr>", "new:email:<addr>" ...
    hits          INT UNSIGNED NOT NULL DEFAULT 0,
    window_start  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_webform_rate_window (window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
