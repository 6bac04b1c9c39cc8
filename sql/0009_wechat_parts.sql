-- 0009_wechat_parts: the parts of a WeChat reply and how far each got.
-- A reply with files is one outbox row but several WeChat messages: part 0
-- the text, part n the payload's n-th file (media/upload, then a message
-- with the media_id).  The adapter sets sent_at right after WeChat accepts
-- a part and skips those parts when the outbox retries the row, so a retry
-- never sends a part twice.  A row without sent_at is a file uploaded whose
-- message has not gone out yet: the retry sends the same media_id while it
-- is fresh (WeChat keeps temporary media three days).
CREATE TABLE IF NOT EXISTS wechat_sent_part (
    outbox_id    BIGINT UNSIGNED NOT NULL,
    part         SMALLINT UNSIGNED NOT NULL,          -- 0 the text, n the n-th file
    msgtype      VARCHAR(16)  NOT NULL,               -- text, image, file
    media_id     VARCHAR(255) NULL,                   -- the temporary medium (files)
    uploaded_at  DATETIME(6) NULL,                    -- when media_id was uploaded
    sent_at      DATETIME(6) NULL,                    -- WeChat accepted the message
    PRIMARY KEY (outbox_id, part),
    CONSTRAINT fk_wechat_sent_part_outbox FOREIGN KEY (outbox_id) REFERENCES outbox (id)
        ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
