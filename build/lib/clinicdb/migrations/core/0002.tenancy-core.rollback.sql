-- 0002.tenancy-core: undo 0002.tenancy-core.
--
-- Frozen: the SQL below is what this migration runs, copied from sql/schema/tenancy_core.rollback.sql,
-- sql/schema/clinicdb.rollback.sql when it was written. migrations/migrations.lock pins it: change
-- sql/ and add a new migration instead of editing this file.

set local role clinicdb_owner;
-- ---- sql/schema/tenancy_core.rollback.sql ----
drop table if exists public.clinics cascade;
-- ---- sql/schema/clinicdb.rollback.sql ----
drop schema if exists clinicdb cascade;
alter default privileges for role clinicdb_owner in schema public
    revoke select, insert, update, delete on tables from clinicdb_app, clinicdb_staff;
alter default privileges for role clinicdb_owner in schema public
    revoke select on tables from clinicdb_readonly;
alter default privileges for role clinicdb_owner grant execute on functions to public;
reset role;
