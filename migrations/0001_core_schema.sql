-- previous release: incompatible (the first schema: there is no release before it)
-- Core schema: centers, principals and their tokens, upload jobs, nodes, transfers.

CREATE TABLE centers (
    id          BIGSERIAL PRIMARY KEY,
    center_key  TEXT NOT NULL UNIQUE CHECK (center_key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A token is a principal: role, optional center scope, label. Only sha256(token) is kept.
CREATE TABLE api_tokens (
    id          BIGSERIAL PRIMARY KEY,
    token_sha256 BYTEA NOT NULL UNIQUE,
    label       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('super_admin', 'center_admin', 'uploader', 'viewer')),
    center_id   BIGINT REFERENCES centers(id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ,
    CHECK ((role = 'super_admin') = (center_id IS NULL))
);

CREATE TABLE upload_jobs (
    id              UUID PRIMARY KEY,
    ingest_mode     TEXT NOT NULL CHECK (ingest_mode IN ('api', 'watcher', 'hub_transfer')),
    source_system   TEXT NOT NULL,
    center_id       BIGINT REFERENCES centers(id),
    original_name   TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('video', 'report', 'preanonymized')),
    size_bytes      BIGINT NOT NULL CHECK (size_bytes >= 0),
    content_hash    TEXT CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    idempotency_key TEXT,
    storage_path    TEXT,
    status          TEXT NOT NULL CHECK (status IN ('stored', 'processing', 'done', 'error')),
    error_detail    TEXT,
    provenance      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (status = 'error' OR (content_hash IS NOT NULL AND storage_path IS NOT NULL AND center_id IS NOT NULL))
);
-- One stored object per center and content: a repeat upload is a dedupe, not a copy.
CREATE UNIQUE INDEX upload_jobs_center_hash ON upload_jobs (center_id, content_hash) WHERE status <> 'error';
CREATE INDEX upload_jobs_idempotency ON upload_jobs (idempotency_key);
CREATE INDEX upload_jobs_center_created ON upload_jobs (center_id, created_at DESC);

CREATE TABLE nodes (
    id               BIGSERIAL PRIMARY KEY,
    node_key         TEXT NOT NULL UNIQUE,
    role             TEXT NOT NULL CHECK (role IN ('standalone', 'site_node', 'central_hub')),
    base_url         TEXT,
    center_id        BIGINT REFERENCES centers(id),
    secret_hash      TEXT NOT NULL,
    cert_fingerprint TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE transfers (
    id                     BIGSERIAL PRIMARY KEY,
    transfer_key           TEXT NOT NULL UNIQUE,
    source_node_key        TEXT NOT NULL,
    target_node_key        TEXT NOT NULL,
    source_center_key      TEXT NOT NULL,
    resource_kind          TEXT NOT NULL CHECK (resource_kind IN ('video', 'report')),
    resource_hash          TEXT NOT NULL,
    payload_schema_version TEXT NOT NULL,
    transfer_status        TEXT NOT NULL CHECK (transfer_status IN ('awaiting_media', 'applied', 'failed', 'inconsistent')),
    detail                 TEXT,
    metadata               JSONB NOT NULL DEFAULT '[]'::jsonb,
    upload_job_id          UUID REFERENCES upload_jobs(id),
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
