-- 0005_wechat: the WeChat channel (Official Accounts and WeCom self-built apps).
-- The account's default queue lives in channel_account (channel 'wechat',
-- account = account_key), where ingest routing reads it; message dedupe is
-- ingest's inbound_receipt (external id = MsgId).  The AppSecret is never
-- stored here: secret_ref names it in the secrets file.

CREATE TABLE IF NOT EXISTS wechat_account (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account_key       VARCHAR(64)  NOT NULL,          -- /hooks/wechat/{account_key}
    kind              ENUM('official','wecom') NOT NULL DEFAULT 'official',
    name              VARCHAR(200) NOT NULL DEFAULT '',
    app_id            VARCHAR(64)  NOT NULL,          -- AppID or CorpID: the receive id
    agent_id          BIGINT UNSIGNED NULL,           -- WeCom AgentID (outbound)
    token             VARCHAR(64)  NOT NULL,          -- signature token
    encoding_aes_key  CHAR(43) NULL,
    previous_aes_key  CHAR(43) NULL,                  -- still accepted after a rotation
    secret_ref        VARCHAR(100) NULL,              -- AppSecret / CorpSecret name in secrets_file
    mode              ENUM('plain','compat','safe') NOT NULL DEFAULT 'safe',
    api_base          VARCHAR(255) NULL,              -- NULL: WeChat's own API host
    timestamp_window  INT UNSIGNED NULL,              -- seconds; NULL: wechat_timestamp_window
    auto_reply        VARCHAR(2000) NULL,             -- passive reply to messages; {number}
    welcome_message   VARCHAR(2000) NULL,             -- passive reply to subscribe
    menu_replies      JSON NOT NULL DEFAULT ('{}'),   -- {"CLICK key": "reply"}
    enabled           TINYINT(1) NOT NULL DEFAULT 1,
    created_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at        DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_wechat_account_key (account_key),
    CHECK (JSON_VALID(menu_replies))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- The access token, shared by every instance.  refresh_owner/refresh_until is
-- the lease of the one instance fetching a new token; refresh_until in the
-- future without an owner is the cool-down after a failed fetch.
CREATE TABLE IF NOT EXISTS wechat_token (
    account_key    VARCHAR(64) NOT NULL PRIMARY KEY,
    access_token   VARCHAR(2048) NULL,
    expires_at     DATETIME(6) NULL,
    generation     INT UNSIGNED NOT NULL DEFAULT 0,
    refresh_owner  VARCHAR(100) NULL,
    refresh_until  DATETIME(6) NULL,
    refreshed_at   DATETIME(6) NULL,
    last_error     VARCHAR(1000) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Followers (OpenIDs) and WeCom members seen on an account: the address the
-- API wants, the customer_identity value they are known by, and when they
-- last wrote (the 48-hour customer-service window).
CREATE TABLE IF NOT EXISTS wechat_user (
    account_key     VARCHAR(64)  NOT NULL,
    user_id         VARCHAR(128) NOT NULL,            -- OpenID or WeCom UserID
    identity_value  VARCHAR(254) NOT NULL,            -- customer_identity (wechat_openid)
    subscribed      TINYINT(1) NULL,
    last_in_at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    created_at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (account_key, user_id),
    KEY ix_wechat_user_identity (identity_value, account_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Events (follow, unfollow, menu clicks) once each: WeChat retries a push up
-- to three times; the key is FromUserName|CreateTime|Event.
CREATE TABLE IF NOT EXISTS wechat_event (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account_key  VARCHAR(64)  NOT NULL,
    dedupe_key   VARCHAR(191) NOT NULL,
    user_id      VARCHAR(128) NOT NULL,
    customer_id  BIGINT UNSIGNED NULL,
    event        VARCHAR(64)  NOT NULL,
    event_key    VARCHAR(512) NULL,
    created_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_wechat_event (account_key, dedupe_key),
    KEY ix_wechat_event_user (account_key, user_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Media of image/voice/video messages, fetched after the push was
-- acknowledged by the wechat-media job into attachments of the message.
CREATE TABLE IF NOT EXISTS wechat_media (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    account_key      VARCHAR(64)  NOT NULL,
    media_id         VARCHAR(255) NOT NULL,
    kind             VARCHAR(16)  NOT NULL,           -- image voice video shortvideo
    format           VARCHAR(16)  NULL,               -- voice: amr, speex ...
    ticket_id        BIGINT UNSIGNED NOT NULL,
    message_id       BIGINT UNSIGNED NOT NULL,
    status           ENUM('queued','fetching','done','failed') NOT NULL DEFAULT 'queued',
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    next_attempt_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    lease_owner      VARCHAR(100) NULL,
    lease_until      DATETIME(6) NULL,
    attachment_id    BIGINT UNSIGNED NULL,
    last_error       VARCHAR(1000) NULL,
    created_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY ux_wechat_media (message_id, media_id),
    KEY ix_wechat_media_due (status, next_attempt_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
