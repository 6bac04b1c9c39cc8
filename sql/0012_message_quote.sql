-- 0012_message_quote: where a message's quoted history begins (bytes into
-- body_text; NULL = it quotes nothing), so a read can show the new text
-- folded apart from the history without touching email_message_id.
ALTER TABLE message ADD COLUMN IF NOT EXISTS quote_offset INT UNSIGNED NULL;
