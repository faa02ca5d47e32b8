-- Undo sql/functions/protect_report.sql.
drop function if exists clinicdb.adopt_table_sql(regclass);
drop function if exists clinicdb.protect_report(regclass);
