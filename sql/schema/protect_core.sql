-- The layer's own tenant tables get the standard protection like any other:
-- policy_reference carries the policies check_isolation() compares against,
-- clinics is where each clinic sees only itself.
select clinicdb.protect_table('clinicdb.policy_reference');
select clinicdb.protect_table('clinicdb.clinics');
