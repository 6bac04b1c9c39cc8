-- 0008_email_cc: addresses copied (Cc) on a ticket's incoming mail.  A
-- [KF-000123] subject token is accepted from the ticket's customer or from
-- one of these known CCs, and from nobody else.
CREATE TABLE IF NOT EXISTS ticket_cc (
    ticket_id   BIGINT UNSIGNED NOT NULL,
    address     VARCHAR(254) NOT NULL,
    created_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (ticket_id, address),
    CONSTRAINT fk_ticket_cc_ticket FOREIGN KEY (ticket_id) REFERENCES ticket (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
