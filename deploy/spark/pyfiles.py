"""Build the zip that spark-submit's --py-files needs: the lake job and its ground, laid out under
the `smartcity.` namespace exactly as the wheel installs them.

    python deploy/spark/pyfiles.py smartcity.zip

The checkout keeps contracts/, runtime/ and spark_jobs/ at the top (pyproject's package-dir maps
them to smartcity.*); a zip on sys.path needs the installed layout, so the folders are renamed here.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Everything the driver imports; executors run no Python today (no UDFs).
PACKAGES = ("contracts", "runtime", "catalog", "spark_jobs")


def build(dest: str | Path) -> Path:
    dest = Path(dest)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        # Python 3.11's zipimport finds a namespace package (smartcity/ has no __init__.py) only
        # through an explicit directory entry, so every folder gets one.
        z.mkdir("smartcity")
        for pkg in PACKAGES:
            z.mkdir(f"smartcity/{pkg}")
            for f in sorted((ROOT / pkg).rglob("*")):
                if "__pycache__" in f.parts:
                    continue
                arc = (Path("smartcity") / f.relative_to(ROOT)).as_posix()
                if f.is_dir():
                    z.mkdir(arc)
                elif f.is_file():
                    z.write(f, arc)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python deploy/spark/pyfiles.py OUT.zip", file=sys.stderr)
        sys.exit(2)
    print(build(sys.argv[1]))
