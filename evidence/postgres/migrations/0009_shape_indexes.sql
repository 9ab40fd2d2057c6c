-- Schema version 9: indexes on the shapes' identity columns.
--
-- A filter first names its shapes (planOf), which schema 5 read by a scan
-- of the table: a few thousand rows for a mesh's edges. But a shape holds
-- its peers' certificates, and Istio renews a workload's certificate every
-- day, so every edge gains new shapes daily: a 30-day store of a mesh of
-- 300 edges holds tens of thousands, a year's hundreds of thousands, and
-- each filtered page scanned them all. Shapes are written once per new
-- edge, method, outcome and certificate, so these indexes cost an insert
-- nothing that counts; a filter on a principal, namespace, workload or
-- host reads its few shapes through them (TestShapeLookupPlan).

CREATE INDEX shapes_source_principal ON shapes (source_principal);
CREATE INDEX shapes_destination_principal ON shapes (destination_principal);
CREATE INDEX shapes_source_namespace ON shapes (source_namespace);
CREATE INDEX shapes_destination_namespace ON shapes (destination_namespace);
CREATE INDEX shapes_source_workload ON shapes (source_workload);
CREATE INDEX shapes_destination_workload ON shapes (destination_workload);
CREATE INDEX shapes_host ON shapes (host);
