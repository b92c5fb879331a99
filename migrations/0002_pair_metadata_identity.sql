-- previous release: incompatible (the dedupe index changes: a release before it would refuse a second pair with the same carrier)
-- A preanonymized pair is identified by its carrier *and* its sidecar: the same text
-- filed for two patients is two jobs (sharing one stored object), not a dedupe.
-- metadata_hash is the sha256 of the sidecar bytes, '' for files without one.
ALTER TABLE upload_jobs ADD COLUMN metadata_hash TEXT NOT NULL DEFAULT '';
DROP INDEX upload_jobs_center_hash;
CREATE UNIQUE INDEX upload_jobs_center_hash_metadata
    ON upload_jobs (center_id, content_hash, metadata_hash) WHERE status <> 'error';
