-- Schema version 7: the peers' Kubernetes workloads on shapes (issue 16),
-- as evidence.WorkloadRef names them (NAMESPACE/NAME, '' for none), for the
-- source_workload and destination_workload filters, which name shapes like
-- every other identity filter (a few thousand rows, read before the
-- records). A workload is in the shape (the records of a shape are one
-- edge's, method's and outcome's), so the columns are the shape's.
--
-- The shapes written before hold their workloads in their bodies only:
-- backfillWorkloads (migrate.go), in this migration's transaction, sets
-- these columns, and the namespaces and source key those shapes now give
-- (evidence.Columns: a namespace falls back to the workload's, a source
-- without a principal is keyed by its workload).

ALTER TABLE shapes
	ADD COLUMN source_workload      text COLLATE "C" NOT NULL DEFAULT '',
	ADD COLUMN destination_workload text COLLATE "C" NOT NULL DEFAULT '';
