"""The clinicdb schema: clinics, staff mapping, current_clinic_id(), the one
tenant policy, protect_table(), check_isolation() and the staff functions."""

from clinicdb.schema import sql_step

__depends__ = {"0001.roles"}

steps = [
    sql_step(
        [
            "schema/clinicdb.sql",
            "schema/clinics.sql",
            "schema/staff_members.sql",
            "functions/current_clinic_id.sql",
            "functions/touch_row.sql",
            "policies/tenant_policies.sql",
            "functions/protect_table.sql",
            "functions/check_isolation.sql",
            "functions/staff.sql",
            "functions/clinics.sql",
            "schema/protect_core.sql",
        ],
        ["schema/tenancy_core.rollback.sql", "schema/clinicdb.rollback.sql"],
    )
]
