"""The lake's partition values as the job writes them: dt=YYYY-MM-DD/hour=HH (UTC event time).

Anything that names a partition from outside (the compact CLI's --dt/--hour, a caller of
compact_hour) goes through these first, so a path is only ever built from a real date and hour,
never from raw input ("../x", "2026-13-01", "24"). No pyspark here: the CLI checks its arguments
before a Spark session exists.
"""
from __future__ import annotations

import re
from datetime import date

_DT_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")   # ASCII digits only (\d is any Unicode digit)
_HOUR_RE = re.compile(r"[0-9]{1,2}")


def partition_dt(value: object) -> str:
    """'2026-11-28' -> '2026-11-28'; ValueError unless a calendar date written YYYY-MM-DD."""
    if not isinstance(value, str) or not _DT_RE.fullmatch(value):
        raise ValueError(f"dt must be a date written YYYY-MM-DD, not {value!r}")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError as e:
        raise ValueError(f"dt {value!r} is not a calendar date ({e})") from None


def partition_hour(value: object) -> str:
    """'7', '07' or 7 -> '07'; ValueError unless an hour 0-23."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not _HOUR_RE.fullmatch(text) or int(text) > 23:
        raise ValueError(f"hour must be 00-23, not {value!r}")
    return f"{int(text):02d}"
