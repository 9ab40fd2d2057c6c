-- Schema version 8: request id lookups through a function that plans them
-- as the index wants.
--
-- The planner cannot price schema 6's BRIN bloom index: it takes the
-- random keys' zero correlation with the heap's order to mean that the
-- index would select almost every range, so it reads most day partitions
-- whole instead, and the inflated cost turns JIT compilation on (some
-- 230 ms of it). At 10,000,000 records a lookup took 343 ms (p50), where
-- reading every range's filter and the one or two ranges that may hold the
-- id takes 15. records_by_request finds a UUID request id's records with
-- sequential scans and JIT off (SET clauses, which also keep it from being
-- inlined into the caller's plan) and returns their chain numbers; a
-- query's other conditions then read those records through records_chain.

CREATE FUNCTION records_by_request(rid bytea, k bigint) RETURNS SETOF bigint
	LANGUAGE sql STABLE STRICT ROWS 1
	SET enable_seqscan = off SET jit = off
AS $$
	SELECT chain FROM records
	WHERE request_id = rid AND length(request_id) = 16
		AND (('x' || encode(substring(request_id FROM 1 FOR 8), 'hex'))::bit(64)::bigint) = k
$$;
