-- 0004_tickets: what the ticket and customer API needs on top of 0002/0003:
-- customer merges (the source row stays, marked merged_into_id), indexes for
-- customer search (name prefix, identity value of any kind), and ticket_tag
-- so the list filter ?tag= is an index lookup instead of a JSON scan.

ALTER TABLE customer
    ADD COLUMN IF NOT EXISTS merged_into_id BIGINT UNSIGNED NULL AFTER notes,
    ADD KEY IF NOT EXISTS ix_customer_name (name),
    ADD KEY IF NOT EXISTS ix_customer_merged (merged_into_id);

ALTER TABLE customer_identity
    ADD KEY IF NOT EXISTS ix_identity_value (value);

-- One row per (tag, ticket); ticket.tags (JSON) stays the source of truth
-- the API returns, this table is kept equal to it by server/ticket.c.
CREATE TABLE IF NOT EXISTS ticket_tag (
    tag        VARCHAR(64) NOT NULL,
    ticket_id  BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (tag, ticket_id),
    KEY ix_ticket_tag_ticket (ticket_id),
    CONSTRAINT fk_ticket_tag_ticket FOREIGN KEY (ticket_id) REFERENCES ticket (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
