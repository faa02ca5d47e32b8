-- The clinicdb schema: the layer's own functions and registries. Owned by
-- clinicdb_owner. Functions are not executable by PUBLIC by default here:
-- each one is granted to the roles that need it, next to its definition.
create schema if not exists clinicdb authorization clinicdb_owner;
comment on schema clinicdb is 'clinicdb: tenant isolation, audit and key management for a multi-clinic database.';

grant usage on schema clinicdb to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor;

alter default privileges for role clinicdb_owner revoke execute on functions from public;
alter default privileges for role clinicdb_owner in schema clinicdb revoke execute on functions from public;

-- Application tables the owner creates later are usable by the application
-- roles without a grant per table. TRUNCATE, REFERENCES and TRIGGER are
-- deliberately absent: RLS does not cover them.
alter default privileges for role clinicdb_owner in schema public
    grant select, insert, update, delete on tables to clinicdb_app, clinicdb_staff;
alter default privileges for role clinicdb_owner in schema public
    grant select on tables to clinicdb_readonly;

-- Columns holding protected health information, so audit, encryption and
-- reviews can find them. Filled by the schema that declares them.
create table if not exists clinicdb.phi_columns (
    table_name regclass not null,
    column_name name not null,
    note text not null default '',
    primary key (table_name, column_name)
);
comment on table clinicdb.phi_columns is 'clinicdb: columns that hold protected health information (PHI).';
grant select on clinicdb.phi_columns to clinicdb_app, clinicdb_readonly, clinicdb_staff, clinicdb_auditor;
