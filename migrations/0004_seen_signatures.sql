-- previous release: compatible (a new table the release before never reads)
-- Signatures of hub transfer requests the hub has accepted, so each is accepted once
-- (src/access/replay.rs). A signed request is fresh for 300 s either side of its
-- timestamp; its row expires after that window and is deleted by later requests.
CREATE TABLE seen_signatures (
    signature  BYTEA PRIMARY KEY,
    node_key   TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX seen_signatures_expiry ON seen_signatures (expires_at);
