"""Whether two engines gave the same answer to one query (issue 12, "Proof that it is
Athena-compatible"): the same column names, the same number of rows in the same order (every
named query ends with an ORDER BY on its key), and per cell:

- exact for text, integers, booleans and timestamps (compared as UTC instants);
- floats equal within 1e-6 relative or 0.0011 absolute: the queries round to 2-3 decimals, and
  the engines sum in different orders (a last-digit difference at a rounding boundary);
- columns named approx_* (approx_percentile): Trino (qdigest) and DuckDB (t-digest) are different
  estimators, and on data with plateaus and gaps (a bus at a steady 80 km/h, then at 110) two
  good estimates of the same median can lie far apart in value. So the tolerance is on rank,
  not value: each engine's answer must lie between the exact quantiles at p - 0.05 and p + 0.05
  of the same rows (`approx_bounds`: the query run on DuckDB with quantile_disc at p -/+ 0.05).
"""
from __future__ import annotations

import math

RANK_EPS = 0.05
FLOAT_REL, FLOAT_ABS = 1e-6, 0.0011


def _with_exact_quantiles(sql: str, shift: float) -> str:
    """The query in DuckDB SQL with every approx_percentile(x, p) replaced by the exact
    quantile_disc(x, p + shift) (clamped to [0, 1])."""
    from sqlglot import exp

    from smartcity.analytics.engines import to_duckdb

    def swap(node):
        if isinstance(node, exp.ApproxQuantile):
            p = min(1.0, max(0.0, float(node.args["quantile"].this) + shift))
            return exp.Anonymous(this="quantile_disc", expressions=[node.this.copy(), exp.Literal.number(p)])
        return node
    return to_duckdb(sql, percentiles=(swap,))


def approx_bounds(duckdb_engine, sql: str) -> tuple:
    """(low, high): the query's rows with the exact quantiles at p - RANK_EPS and p + RANK_EPS in
    place of each approx_percentile, computed by DuckDB on the same tables."""
    duckdb_engine.bind_tables(duckdb_engine.connection(), sql)
    con = duckdb_engine.connection()
    return tuple(con.execute(_with_exact_quantiles(sql, s)).fetchall() for s in (-RANK_EPS, RANK_EPS))


def cells_match(column: str, a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=FLOAT_REL, abs_tol=FLOAT_ABS)
    return a == b


def assert_same_rows(expected, actual, bounds: tuple | None = None) -> None:
    """expected/actual: analytics.engines.Result; bounds: approx_bounds() of the same query
    (required when the query has approx_* columns). AssertionError naming row, column, values."""
    assert expected.columns == actual.columns, (expected.columns, actual.columns)
    assert len(expected.rows) == len(actual.rows), \
        f"{expected.engine}: {len(expected.rows)} rows, {actual.engine}: {len(actual.rows)} rows"
    approx = [i for i, c in enumerate(expected.columns) if c.startswith("approx_")]
    assert not approx or bounds is not None, "approx_* columns need the rank bounds (approx_bounds)"
    for i, (ra, rb) in enumerate(zip(expected.rows, actual.rows)):
        for j, (c, a, b) in enumerate(zip(expected.columns, ra, rb)):
            if j in approx:
                lo, hi = bounds[0][i][j], bounds[1][i][j]
                for engine, v in ((expected.engine, a), (actual.engine, b)):
                    assert (v is None and lo is None) or lo - FLOAT_ABS <= v <= hi + FLOAT_ABS, \
                        f"row {i} column {c}: {engine} {v!r} outside the exact quantiles [{lo}, {hi}] " \
                        f"at p -/+ {RANK_EPS}"
            else:
                assert cells_match(c, a, b), f"row {i} column {c}: {expected.engine} {a!r} != {actual.engine} {b!r}"
