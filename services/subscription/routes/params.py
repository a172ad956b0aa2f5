"""Path and query parameters of the admin routes, bounded by what the database can hold.

Row ids are ``INTEGER`` columns (32-bit on PostgreSQL). A number outside that range cannot
name a row, and handing it to the driver fails inside the query (asyncpg: "value out of
int32 range"; sqlite3: "Python int too large to convert to SQLite INTEGER"), which used to
answer 500. Declaring the bounds here makes FastAPI answer 422 before any query runs, and
puts ``minimum``/``maximum`` in the OpenAPI schema.

Text that reaches a query or a row must not hold U+0000: PostgreSQL's text types cannot
store it (asyncpg: 'invalid byte sequence for encoding "UTF8": 0x00'), SQLite can, and the
same request must get the same answer on both engines. ``NO_NUL`` is the pattern for that.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

NO_NUL = r"^[^\x00]*$"
MAX_ROW_ID = 2**31 - 1  # PostgreSQL INTEGER; no table here has more rows than that either

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Row id (1 to 2147483647)")]
Offset = Annotated[int, Query(ge=0, le=MAX_ROW_ID, description="Rows to skip (0 to 2147483647)")]
