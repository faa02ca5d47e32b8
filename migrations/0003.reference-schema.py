"""The reference healthcare schema shared by the demo, tests and benchmarks."""

from clinicdb.schema import sql_step

__depends__ = {"0002.tenancy-core"}

steps = [
    sql_step(
        [
            "reference/staff.sql",
            "reference/patients.sql",
            "reference/appointments.sql",
            "reference/medical_records.sql",
            "reference/prescriptions.sql",
            "reference/phi.sql",
            "reference/protect.sql",
        ],
        ["reference/rollback.sql"],
    )
]
