-- Audit every table protect_table() protected before the audit layer was
-- installed (protect_table calls attach_audit itself from now on).
-- clinicdb.policy_reference never holds rows and is left out.
select clinicdb.attach_audit(pt.table_name)
  from clinicdb.protected_tables pt
 where pt.table_name <> 'clinicdb.policy_reference'::regclass
 order by pt.table_name::text;

-- This month's and the next three months' partitions.
select count(*) from clinicdb.ensure_audit_partitions(3);
