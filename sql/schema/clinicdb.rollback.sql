drop schema if exists clinicdb cascade;
alter default privileges for role clinicdb_owner in schema public
    revoke select, insert, update, delete on tables from clinicdb_app, clinicdb_staff;
alter default privileges for role clinicdb_owner in schema public
    revoke select on tables from clinicdb_readonly;
alter default privileges for role clinicdb_owner grant execute on functions to public;
