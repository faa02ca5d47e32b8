"""The five clinicdb group roles (cluster-wide) and the owner's rights here."""

from clinicdb.schema import sql_step

steps = [sql_step(["schema/roles.sql"], ["schema/roles.rollback.sql"], as_owner=False)]
