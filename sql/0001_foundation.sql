-- 0001_foundation: what kefud itself needs to run several instances on one database.
-- schema_migrations is created by the migration runner (server/migrate.c).

CREATE TABLE IF NOT EXISTS kefu_meta (
    k           VARCHAR(64)  NOT NULL PRIMARY KEY,
    v           VARCHAR(255) NOT NULL,
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Singleton jobs: one instance holds a named lease until expires_at.
CREATE TABLE IF NOT EXISTS job_lease (
    name        VARCHAR(100) NOT NULL PRIMARY KEY,
    owner       VARCHAR(100) NOT NULL,
    expires_at  DATETIME(6)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;

-- Every running kefud says it is alive here (instance-heartbeat job).
CREATE TABLE IF NOT EXISTS kefu_instance (
    id           VARCHAR(100) NOT NULL PRIMARY KEY,
    host         VARCHAR(64)  NOT NULL,
    pid          INT UNSIGNED NOT NULL,
    version      VARCHAR(32)  NOT NULL,
    started_at   DATETIME(6)  NOT NULL,
    last_seen_at DATETIME(6)  NOT NULL,
    KEY ix_instance_seen (last_seen_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci;
