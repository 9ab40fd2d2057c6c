-- Schema version 3: each replica's transparency log and its signed
-- checkpoints. Records written from now on are canonical encoding v2: body
-- holds the record's canonical bytes (RFC 8785, no chain fields), hash its
-- RFC 6962 leaf hash, prev_hash is empty.

-- The log's root as the last batch left it, beside the head.
ALTER TABLE chain_heads ADD COLUMN root bytea NOT NULL DEFAULT '';

-- Where each replica's log starts: the seq before its first leaf, and the
-- canonical-v1 hash of that record (a chain begun before the log).
CREATE TABLE tlog_logs (
	replica   text COLLATE "C" PRIMARY KEY,
	base      bigint NOT NULL,
	base_hash text COLLATE "C" NOT NULL
);

-- Tiles of height 8 (tlog's coordinates): the complete ones, and the
-- partial ones above level 0 (the partial tile of level 0 is the hash column
-- of the newest records).
CREATE TABLE tlog_tiles (
	replica text COLLATE "C" NOT NULL,
	level   integer NOT NULL,
	n       bigint  NOT NULL,
	hashes  bytea   NOT NULL,
	PRIMARY KEY (replica, level, n)
);

CREATE TABLE tlog_checkpoints (
	replica text COLLATE "C" NOT NULL,
	size    bigint NOT NULL,
	time_ns bigint NOT NULL,
	note    bytea  NOT NULL,
	PRIMARY KEY (replica, size)
);
