-- previous release: compatible (a new column with a default; the release before neither reads nor writes it)
-- The site's retry budget (LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES): attempts of an export
-- that ended in a retryable failure since it was marked or last put back by
-- `lxgate hub-export retry`. `attempts` keeps counting every attempt for the record.
ALTER TABLE hub_exports ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
