-- previous release: incompatible (its columns have defaults, but a release before it does not know sealed objects: it would serve their age ciphertext as the media, audit them as damaged and send them to the hub as they lie)
-- How each stored object is kept at rest (nix/contract.toml [storage]): 'plain' on the
-- LUKS data root, served by nginx; 'age' sealed to the master identity whose recipient
-- is sealed_to, opened by the app. A sealed object's path ends in `.age`, so the same
-- content stored both ways is two files. Rows from before this migration are plain.
ALTER TABLE upload_jobs
    ADD COLUMN stored_as TEXT NOT NULL DEFAULT 'plain' CHECK (stored_as IN ('plain', 'age')),
    ADD COLUMN sealed_to TEXT CHECK (sealed_to ~ '^age1[0-9a-z]+$'),
    ADD CONSTRAINT upload_jobs_sealed_to_recipient CHECK ((stored_as = 'age') = (sealed_to IS NOT NULL));
-- A preanonymized pair's sidecar is an object of its own (sealed like its carrier);
-- its content hash is metadata_hash.
ALTER TABLE upload_jobs ADD COLUMN sidecar_path TEXT;
-- doctor and `lxgate keys rotate` look objects up by the identity they are sealed to.
CREATE INDEX upload_jobs_sealed_to ON upload_jobs (sealed_to) WHERE sealed_to IS NOT NULL;
