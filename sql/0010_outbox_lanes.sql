-- 0010_outbox_lanes: the outbox sender claims per channel (a lane per
-- channel adapter, server/outbox.c), so due rows are found by channel too.
ALTER TABLE outbox ADD KEY IF NOT EXISTS ix_outbox_lane (status, channel, next_attempt_at);
