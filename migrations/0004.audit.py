"""The audit trail: partitioned append-only clinicdb.audit_log, its triggers
on every protected table, log_access() for PHI reads, retention and the seal
chain (issue #4)."""

from clinicdb.schema import sql_step

__depends__ = {"0003.reference-schema"}

steps = [
    sql_step(
        [
            "schema/audit_log.sql",
            "schema/audit_settings.sql",
            "schema/audit_seals.sql",
            "functions/audit_capture.sql",
            "functions/attach_audit.sql",
            "functions/audit_partitions.sql",
            "functions/audit_seal.sql",
            "functions/log_access.sql",
            "schema/audit_attach_existing.sql",
        ],
        ["schema/audit.rollback.sql"],
    )
]
