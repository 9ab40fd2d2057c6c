-- Schema version 4: rollup seals (evidence.RollupSeal). Before retention
-- removes a replica's records of an hour, the hour's minute buckets of that
-- replica are sealed: a digest, chained to the seal of the hour before.

-- Where each replica's seals stand: hours seal_first to seal_through-1 are
-- sealed, seal_chain is the last seal. Append reads seal_through with the
-- head it locks: a record of a sealed hour is not counted in the rollups.
ALTER TABLE chain_heads
	ADD COLUMN seal_first bigint NOT NULL DEFAULT 0,
	ADD COLUMN seal_through bigint NOT NULL DEFAULT 0,
	ADD COLUMN seal_chain bytea NOT NULL DEFAULT '';

CREATE TABLE rollup_seals (
	replica text COLLATE "C" NOT NULL,
	hour    bigint NOT NULL,
	digest  bytea  NOT NULL,
	prev    bytea  NOT NULL,
	chain   bytea  NOT NULL,
	PRIMARY KEY (replica, hour)
);
