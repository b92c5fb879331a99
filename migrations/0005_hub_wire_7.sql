-- previous release: compatible (new columns with defaults and a wider status set; the release before writes none of them)
-- Hub transfers as payload schema 7.0 carries them (src/hub/wire): the hub keeps the
-- whole registered payload (an exact replay compares it, the status body reports it)
-- and the receipt of the envelope it applied; the nine statuses of the reference.
ALTER TABLE transfers
    ADD COLUMN transfer_id          UUID NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN transfer_mode        TEXT NOT NULL DEFAULT 'metadata_and_processed_media',
    ADD COLUMN processing_policy    TEXT NOT NULL DEFAULT 'preserve_processing_state',
    ADD COLUMN processing_intent    TEXT NOT NULL DEFAULT 'sender_requests_state_preservation',
    ADD COLUMN cleanup_policy       TEXT NOT NULL DEFAULT 'retain_all',
    ADD COLUMN processing_decision  TEXT NOT NULL DEFAULT 'wait_for_missing_media',
    ADD COLUMN resource_rows        JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN processing_snapshot  JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN provenance           JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN envelope_receipt     JSONB;
CREATE UNIQUE INDEX transfers_transfer_id ON transfers (transfer_id);
ALTER TABLE transfers DROP CONSTRAINT transfers_transfer_status_check;
ALTER TABLE transfers ADD CONSTRAINT transfers_transfer_status_check CHECK (transfer_status IN
    ('pending', 'claimed', 'running', 'retry_wait', 'awaiting_media', 'applied', 'failed', 'inconsistent', 'lost'));

-- The site's side: the raw job the processed media was made from (NULL: the media was
-- preanonymized, raw hash = processed hash), and the reference's failure class.
ALTER TABLE hub_exports
    ADD COLUMN raw_upload_job_id UUID REFERENCES upload_jobs(id),
    ADD COLUMN failure_class     TEXT;
