-- 0007_email: the email channel (LMTP and raw MIME over HTTP in, SMTP out).
--
-- email_mailbox: one row per mailbox; `name` is the channel account
--   (message.channel_account, outbox.channel_account) and the {mailbox} of
--   POST /api/v1/inbound/email/{mailbox}; `address` is what LMTP recipients
--   and outbound From use.  Its queue is channel_account.default_queue_id
--   (channel 'email', account = name), where ingest routing reads it.  IMAP
--   columns are kept for the poller (uidvalidity + last uid); passwords are
--   never stored here: imap_secret_ref names one in the secrets file.
-- email_message_id: every Message-ID Kefu received or sent, for threading
--   (In-Reply-To / References) and for bounces (which outbox row bounced);
--   for received mail also where its quoted history starts.
-- email_quarantine: raw messages that could not be ingested, kept with the
--   reason; the source moved on.
-- email_auto_reply: automatic replies sent per address per day (loop brake).

CREATE TABLE IF NOT EXISTS email_mailbox (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name              VARCHAR(100) NOT NULL,
    address           VARCHAR(254) NOT NULL,
    display_name      VARCHAR(200) NOT NULL DEFAULT '',
    send_ack          TINYINT(1) NOT NULL DEFAULT 0,
    imap_url          VARCHAR(500) NULL,              -- imaps://host:993/INBOX
    imap_user         VARCHAR(254) NULL,
    imap_secret_ref   VARCHAR(100) NULL,
    imap_done_folder  VARCHAR(200) NULL,              -- NULL: set \Seen
    poll_interval     INT UNSIGNED NOT NULL DEFAULT 60,
    imap_uidvalidity  BIGINT UNSIGNED NULL,
    imap_last_uid     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    imap_polled_at    DATETIME(6) NULL,
    imap_error        VARCHAR(1000) NULL,             -- last poll's failure, NULL when fine
    enabled           TINYINT(1) NOT NULL DEFAULT 1,
    created_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_email_mailbox_name (name),
    UNIQUE KEY ux_email_mailbox_address (address)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS email_message_id (
    message_id_hdr    VARCHAR(250) NOT NULL,
    direction         ENUM('in','out') NOT NULL,
    ticket_id         BIGINT UNSIGNED NOT NULL,
    message_id        BIGINT UNSIGNED NULL,
    outbox_id         BIGINT UNSIGNED NULL,
    quote_offset      INT UNSIGNED NULL,              -- 'in': byte offset in message.body_text
                                                      -- where the quoted history starts (folded
                                                      -- for display); NULL = none
    created_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (message_id_hdr, direction),
    KEY ix_email_message_id_ticket (ticket_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS email_quarantine (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    mailbox           VARCHAR(100) NOT NULL,
    source            VARCHAR(16)  NOT NULL,          -- lmtp, http, imap
    error             VARCHAR(1000) NOT NULL,
    raw               LONGBLOB NOT NULL,
    created_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY ix_email_quarantine_mailbox (mailbox, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

CREATE TABLE IF NOT EXISTS email_auto_reply (
    address           VARCHAR(254) NOT NULL,
    day               DATE NOT NULL,
    sent              INT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (address, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
