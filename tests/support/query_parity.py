"""Whether two engines gave the same answer to one query (issue 12, "Proof that it is
Athena-compatible"): the same column names, the same number of rows in the same order (every
named query ends with an ORDER BY on its key), and per cell:

- exact for text, integers, booleans and timestamps (compared as UTC instants);
- floats equal within 1e-6 relative or one unit of the 3rd decimal: the queries round, and the
  engines sum in different orders (a last-digit difference at a rounding boundary);
- columns named approx_*: within 5 % or 1.0 absolute: Trino's approx_percentile (qdigest) and
  DuckDB's approx_quantile (t-digest) are different estimators of the same quantile.
"""
from __future__ import annotations

import math

APPROX_REL, APPROX_ABS = 0.05, 1.0
FLOAT_REL, FLOAT_ABS = 1e-6, 0.0011


def cells_match(column: str, a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        if column.startswith("approx_"):
            return math.isclose(a, b, rel_tol=APPROX_REL, abs_tol=APPROX_ABS)
        return math.isclose(a, b, rel_tol=FLOAT_REL, abs_tol=FLOAT_ABS)
    return a == b


def assert_same_rows(expected, actual) -> None:
    """expected/actual: analytics.engines.Result. AssertionError naming row, column and values."""
    assert expected.columns == actual.columns, (expected.columns, actual.columns)
    assert len(expected.rows) == len(actual.rows), \
        f"{expected.engine}: {len(expected.rows)} rows, {actual.engine}: {len(actual.rows)} rows"
    for i, (ra, rb) in enumerate(zip(expected.rows, actual.rows)):
        for c, a, b in zip(expected.columns, ra, rb):
            assert cells_match(c, a, b), f"row {i} column {c}: {expected.engine} {a!r} != {actual.engine} {b!r}"
