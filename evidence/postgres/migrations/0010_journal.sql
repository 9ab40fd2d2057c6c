-- Schema version 10: the journal of writers in sync and fsync durability.
--
-- A writer whose Checks wait for their records (sync, fsync) commits each
-- group of them here, one row of their JSON lines in one INSERT, instead of
-- a transaction that writes the records, rollups, head and log tiles: that
-- transaction took five round trips and ten-odd index updates per group of
-- two or three records. The store moves journaled rows into the records in
-- batches, as an async writer writes them, and deletes them then
-- (journal.go). A row is committed evidence until it is applied: a writer
-- that stops leaves its rows to the next writer of its replica, or to the
-- next Open that finds the replica's advisory lock free.

CREATE TABLE journal (
    replica text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    records bytea NOT NULL,
    PRIMARY KEY (replica, first_seq)
);

-- Rows a recovery found after a gap in a replica's chain (the journal
-- lost rows: a deletion by hand?), which cannot be chained after its head:
-- kept for an auditor rather than dropped.
CREATE TABLE journal_unchained (
    replica text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    records bytea NOT NULL,
    kept_at timestamptz NOT NULL DEFAULT now()
);
