-- THE tenant policy: the one definition every tenant table gets.
--
-- protect_table() creates these four policies from this table's rows,
-- `clinicdb sql policies` prints what protect_table would run, and
-- clinicdb.check_isolation() compares each table's live policies with a
-- reference table protected from these same rows. Change the rule here, once.
--
-- Invariants:
--   * select: a row is visible only while its clinic is in force; with no
--     clinic in force, current_clinic_id() is NULL and nothing is visible.
--   * insert/update/delete: require_clinic_id() raises a clear error when no
--     clinic is in force, so a write never silently does nothing.
--   * update: WITH CHECK too, so a row can never be moved to another clinic.
--   * Each call is wrapped in (select ...): PostgreSQL evaluates it once per
--     statement (an InitPlan), and `clinic_id = $initplan` can use the
--     (clinic_id, ...) indexes. A bare call would run once per row.
create table if not exists clinicdb.tenant_policies (
    command text primary key check (command in ('select', 'insert', 'update', 'delete')),
    policy_name name not null unique,
    using_expr text,
    check_expr text
);
comment on table clinicdb.tenant_policies is
    'clinicdb: the single definition of the tenant policy, one row per command.';

insert into clinicdb.tenant_policies (command, policy_name, using_expr, check_expr) values
    ('select', 'clinicdb_tenant_select',
        'clinic_id = (select clinicdb.current_clinic_id())', null),
    ('insert', 'clinicdb_tenant_insert',
        null, 'clinic_id = (select clinicdb.require_clinic_id())'),
    ('update', 'clinicdb_tenant_update',
        'clinic_id = (select clinicdb.require_clinic_id())',
        'clinic_id = (select clinicdb.require_clinic_id())'),
    ('delete', 'clinicdb_tenant_delete',
        'clinic_id = (select clinicdb.require_clinic_id())', null)
on conflict (command) do update
    set policy_name = excluded.policy_name,
        using_expr = excluded.using_expr,
        check_expr = excluded.check_expr;
-- Reviewers (the auditor) read the definition; nobody else needs it.
grant select on clinicdb.tenant_policies to clinicdb_auditor;
