-- Every table of the clinicdb schema, and who may see its rows. The rule,
-- which clinicdb.check_isolation() enforces for every table of the schema:
-- row level security enabled and forced, with policies that say who reads
-- what, or no privilege for anyone but the owner.
--
--   * Tenant tables -- clinicdb.clinics, clinicdb.clinic_keys and
--     clinicdb.policy_reference -- carry the standard tenant policy
--     (protect_table): each clinic sees its own rows.
--   * clinicdb.audit_log: its own policies (a clinic reads its trail, the
--     auditor every clinic's, the app and staff append access rows; see
--     sql/schema/audit_log.sql and sql/functions/log_access.sql) and the
--     owner's.
--   * clinicdb.staff_members: a staff login reads its own mapping; the owner's.
--   * Registries without clinic data: whoever holds SELECT reads every row.
--   * Owner-only, without row level security: the audit_log partitions
--     (audit_log_default and audit_log_yYYYYmMM). The trail is read through
--     clinicdb.audit_log, whose policies apply; a partition named directly
--     is its owner's alone (ensure_audit_partitions revokes every other
--     privilege), so there is nothing for a policy to decide.
select clinicdb._secure_layer_table('clinicdb.audit_log', false);
select clinicdb._secure_layer_table('clinicdb.staff_members', false);
select clinicdb._secure_layer_table(t::regclass, true)
  from unnest(array['clinicdb.phi_columns', 'clinicdb.tenant_policies', 'clinicdb.protected_tables',
                    'clinicdb.audit_settings', 'clinicdb.audit_capture_state', 'clinicdb.audit_seals',
                    'clinicdb.audit_seal_rounds', 'clinicdb.audit_seals_legacy', 'clinicdb.audit_pruned_months',
                    'clinicdb.key_epoch', 'clinicdb.key_events', 'clinicdb.encrypted_columns',
                    'clinicdb.reencrypt_progress']) as t;
