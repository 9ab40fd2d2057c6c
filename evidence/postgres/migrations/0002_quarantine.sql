-- Schema version 2: the quarantine, records the store refused for their
-- content (evidence.ErrPermanent), kept apart with the reason.
--
-- A quarantined record keeps its place in its replica's chain: the head
-- moves past it as if it were stored, and verify walks records and
-- quarantine together, so the chain stays whole and nothing is erased.
-- Only bytes and cleaned text are stored here (the record as JSON in body,
-- its id made valid UTF-8 without NUL bytes), so the quarantine takes what
-- records refused. Retention leaves it alone: it is for a person to read.

CREATE TABLE quarantine (
	replica        text COLLATE "C" NOT NULL,
	seq            bigint NOT NULL,
	id             text COLLATE "C" NOT NULL,
	prev_hash      text COLLATE "C" NOT NULL,
	hash           text COLLATE "C" NOT NULL,
	-- json.Marshal of the record, chain included; empty when it would not
	-- encode.
	body           bytea NOT NULL,
	reason         text NOT NULL,
	quarantined_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (replica, seq)
);
