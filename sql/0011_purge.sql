-- 0011_purge: the maintenance job deletes portal links idle past
-- portal_token_idle (server/server.c, purges[]); find them by last use.
ALTER TABLE portal_token ADD KEY IF NOT EXISTS ix_portal_token_used (last_used_at);
