"""The database's clock, as an SQL expression: lease expiry never depends on a worker's own clock."""

from __future__ import annotations

from sqlalchemy import Float
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class db_now(FunctionElement):  # noqa: N801 - reads like the SQL function it stands for
    """Seconds since the epoch, read from the database server's clock when the statement runs."""

    type = Float()
    inherit_cache = True


@compiles(db_now)
def _default(_element, _compiler, **_kw) -> str:
    return "EXTRACT(EPOCH FROM CURRENT_TIMESTAMP)"


@compiles(db_now, "postgresql")
def _postgresql(_element, _compiler, **_kw) -> str:
    # clock_timestamp(), not now(): now() is frozen at the start of a transaction.
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(db_now, "sqlite")
def _sqlite(_element, _compiler, **_kw) -> str:
    # SQLite reads the host's clock itself (C library), so a patched Python clock cannot move it.
    return "((julianday('now') - 2440587.5) * 86400.0)"
