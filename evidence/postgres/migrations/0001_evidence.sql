-- Schema version 1: evidence records partitioned by day, chain heads and
-- checkpoints, per-minute and per-hour rollups.
--
-- Text columns use the "C" collation: comparisons are bytewise (as in
-- every other backend), and prefix filters are index range scans.
-- Times are Unix nanoseconds (timestamptz keeps microseconds only, and
-- pages are ordered by exact time, then id).

CREATE TABLE records (
	time_ns                  bigint  NOT NULL,
	seq                      bigint  NOT NULL,
	allowed                  boolean NOT NULL,
	replica                  text COLLATE "C" NOT NULL,
	id                       text COLLATE "C" NOT NULL,
	source_principal         text COLLATE "C" NOT NULL,
	destination_principal    text COLLATE "C" NOT NULL,
	source_trust_domain      text COLLATE "C" NOT NULL,
	destination_trust_domain text COLLATE "C" NOT NULL,
	source_namespace         text COLLATE "C" NOT NULL,
	destination_namespace    text COLLATE "C" NOT NULL,
	source_key               text COLLATE "C" NOT NULL,
	verdict                  text COLLATE "C" NOT NULL,
	method                   text COLLATE "C" NOT NULL,
	host                     text COLLATE "C" NOT NULL,
	path                     text COLLATE "C" NOT NULL,
	request_id               text COLLATE "C" NOT NULL,
	prev_hash                text COLLATE "C" NOT NULL,
	hash                     text COLLATE "C" NOT NULL,
	-- json.Marshal of the record, byte for byte (bytea: JSON text may
	-- hold \u0000, which jsonb rejects).
	body                     bytea   NOT NULL,
	PRIMARY KEY (replica, seq, time_ns),
	UNIQUE (id, time_ns)
) PARTITION BY RANGE (time_ns);

-- Records over 2 kB are compressed in place: with lz4 where the server
-- has it, several times faster than the default pglz.
DO $$
BEGIN
	IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
		ALTER TABLE records ALTER COLUMN body SET COMPRESSION lz4;
	END IF;
END $$;

CREATE INDEX records_time ON records (time_ns, id);
CREATE INDEX records_source ON records (source_principal, time_ns);
CREATE INDEX records_destination ON records (destination_principal, time_ns);
-- Most records are mtls: the verdict indexes leave them out (a query for
-- mtls reads another index and skips the few others), so they cost little
-- to keep, and find the rare verdicts an auditor asks about at once.
CREATE INDEX records_verdict ON records (verdict, time_ns) WHERE verdict <> 'mtls';
CREATE INDEX records_source_verdict ON records (source_principal, verdict, time_ns) WHERE verdict <> 'mtls';
CREATE INDEX records_host ON records (host, time_ns);
CREATE INDEX records_request_id ON records (request_id) WHERE request_id <> '';

-- The last link of each replica's chain, written with each batch.
CREATE TABLE chain_heads (
	replica    text COLLATE "C" PRIMARY KEY,
	seq        bigint NOT NULL,
	hash       text COLLATE "C" NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- The last link retention removed from each chain.
CREATE TABLE chain_checkpoints (
	replica  text COLLATE "C" PRIMARY KEY,
	seq      bigint NOT NULL,
	hash     text COLLATE "C" NOT NULL,
	saved_at timestamptz NOT NULL DEFAULT now()
);

-- Rollups count records per evidence.RollupKey at four granularities:
-- per minute (as the store's contract says), and per hour, day and week so
-- that a month's report reads a few weeks and days, not forty thousand
-- minutes. A key
-- (replica, edge, verdict, outcome) is stored once in rollup_keys and
-- referred to by id: the counters are narrow rows, cheap to update with
-- every batch and to sum.
CREATE TABLE rollup_keys (
	id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	allowed               boolean NOT NULL,
	replica               text COLLATE "C" NOT NULL,
	source                text COLLATE "C" NOT NULL,
	destination_host      text COLLATE "C" NOT NULL,
	destination_principal text COLLATE "C" NOT NULL,
	verdict               text COLLATE "C" NOT NULL,
	UNIQUE (replica, source, destination_host, destination_principal, verdict, allowed)
);

-- fillfactor: room on each page for the updates every batch makes to stay
-- there (HOT updates, no index change).
CREATE TABLE rollups (
	minute     bigint NOT NULL,
	key        bigint NOT NULL,
	count      bigint NOT NULL,
	first_ns   bigint NOT NULL,
	last_ns    bigint NOT NULL,
	example_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (minute, key)
) WITH (fillfactor = 50);

CREATE TABLE rollups_hourly (
	hour       bigint NOT NULL,
	key        bigint NOT NULL,
	count      bigint NOT NULL,
	first_ns   bigint NOT NULL,
	last_ns    bigint NOT NULL,
	example_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (hour, key)
) WITH (fillfactor = 50);

CREATE TABLE rollups_daily (
	day        bigint NOT NULL,
	key        bigint NOT NULL,
	count      bigint NOT NULL,
	first_ns   bigint NOT NULL,
	last_ns    bigint NOT NULL,
	example_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (day, key)
) WITH (fillfactor = 50);

-- Weeks are counted from the Unix epoch (a Thursday).
CREATE TABLE rollups_weekly (
	week       bigint NOT NULL,
	key        bigint NOT NULL,
	count      bigint NOT NULL,
	first_ns   bigint NOT NULL,
	last_ns    bigint NOT NULL,
	example_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (week, key)
) WITH (fillfactor = 50);

-- Rollups before this minute were removed by retention (one row at most).
-- Hours, days and weeks that began before it are gone too, so queries read their
-- remaining minutes instead.
CREATE TABLE rollup_horizon (
	one    boolean PRIMARY KEY DEFAULT true CHECK (one),
	minute bigint NOT NULL
);
