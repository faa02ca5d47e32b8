-- Undo citus_findings.sql: the function reads only; nothing depends on it.
drop function if exists clinicdb.citus_findings();
