-- previous release: compatible (a new table the release before never reads)
-- Media a site has been told to send to its hub (SPEC §8), and how far each has got.
-- A row is the explicit mark: lxgate does not anonymize, so whoever marks a job states
-- that its media is anonymized and processed. The transfer key is fixed at marking, so
-- every retry registers the same transfer and the hub never makes a second one.
CREATE TABLE hub_exports (
    upload_job_id UUID PRIMARY KEY REFERENCES upload_jobs(id),
    transfer_key  TEXT NOT NULL UNIQUE,
    state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    marked_by     TEXT NOT NULL,
    marked_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX hub_exports_pending ON hub_exports (marked_at) WHERE state = 'pending';
