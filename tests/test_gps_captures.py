"""The fix builder against gpsd on 20 real receivers' captures (BSD-2-Clause, shared data)."""
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge.gps import NmeaPipeline

CAPTURES = (Path(__file__).parents[1] / "../shared/data/gpsd-nmea").resolve()


def _ms(ts: str) -> int:
    t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000)


def test_fixes_match_gpsd_epochs_on_real_captures():
    if not CAPTURES.is_dir():
        pytest.skip(f"gpsd captures not found at {CAPTURES}")
    ref_total = hit = extra = reported = 0
    misses = []
    for exp_path in sorted(CAPTURES.glob("*.expected.json")):
        name = exp_path.name[:-len(".expected.json")]
        exp = json.loads(exp_path.read_text())
        shift = ((exp.get("quirks") or {}).get("time_shift_s") or 0) * 1000
        ref = {_ms(e["time"]) - shift: e for e in exp["epochs"]}
        good = {_ms(t["time"]) - shift for t in exp["tpv"] if t.get("time") and t.get("mode", 0) >= 2}
        p = NmeaPipeline()
        fixes = p.feed((CAPTURES / f"{name}.log").read_bytes()) + p.flush()
        got = {}
        for f in fixes:
            if f.ts is not None and f.fix_mode >= 2:
                assert f.ts.tzinfo is timezone.utc
                got[round(f.ts.timestamp() * 1000)] = f
        for t, e in ref.items():
            f = got.get(t)
            if f and abs(f.lat - e["lat"]) <= 1e-6 and abs(f.lon - e["lon"]) <= 1e-6:
                hit += 1
                if e.get("altMSL") is not None and f.alt_m is not None:
                    assert abs(f.alt_m - e["altMSL"]) <= 0.01, (name, e["time"])
                if e.get("speed") is not None and f.speed_kmh is not None:
                    assert abs(f.speed_kmh / 3.6 - e["speed"]) <= 0.02, (name, e["time"])
            else:
                misses.append(f"{name} {e['time']}")
        ref_total += len(ref)
        reported += len(got)
        extra += sum(1 for t in got if t not in good)
    recall = hit / ref_total
    assert recall >= 0.99, (recall, misses)
    assert extra / reported <= 0.005, extra
