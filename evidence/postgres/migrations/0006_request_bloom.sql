-- Schema 6: request ids indexed by a BRIN bloom index instead of a B-tree.
--
-- Request ids are random. A B-tree on them took every insert down its own
-- path of a tree that grows with the day (1.9-2.1 µs of the server's CPU a
-- row, the largest single cost of Append) and 30 bytes a record at 70 %
-- fill. A BRIN bloom index keeps, per range of 32 heap pages (some 1,700
-- records), a bloom filter of the ids in it: about 2 bytes a record, and
-- an insert only sets bits in the last range's filter. A lookup reads every
-- range's filter (a few MB at 10M records) and then only the ranges that
-- may hold the id (1 % false positives). Ids that are not UUIDs keep their
-- B-tree (records_request_other): they are rare, and of any length.
--
-- n_distinct_per_range is the records a range holds (the filter is sized
-- for it); autosummarize asks autovacuum to summarize a range when the next
-- one starts, and Append summarizes new ranges itself (summarize.go), since
-- a range without a summary is read whole by every lookup.

DROP INDEX records_request_uuid;
CREATE INDEX records_request_uuid ON records USING brin
	((('x' || encode(substring(request_id FROM 1 FOR 8), 'hex'))::bit(64)::bigint)
		int8_bloom_ops (n_distinct_per_range = 2000, false_positive_rate = 0.01))
	WITH (pages_per_range = 32, autosummarize = on)
	WHERE length(request_id) = 16;
