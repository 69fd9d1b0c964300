"""Container images of the project, built from the checkout: the bridge's (bridge/Dockerfile).

    python -m deploy.images bridge                                    # podman, official Python base
    python -m deploy.images bridge --base localhost/debian-base:bookworm   # the local base (CI)
    python -m deploy.images bridge --engine docker

The image installs the project's wheel with the `bridge` extra, not copied source folders: the
wheel is built here from a copy of the checkout (pip, PEP 517, the build requirements from the
package index into .cache/pip/wheelhouse as in tests/test_wheel_install.py), and the build context
is a folder holding that wheel alone, so nothing else of the checkout (.venv, .cache, run/) is sent
to the engine. With podman the build runs with `--network host` and the host's CA bundle mounted
read-only (pip reaches the index as the host does), and `--format docker`: the OCI format has no
HEALTHCHECK, podman drops it there.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
BRIDGE_TAG = f"localhost/smartcity-bridge:{VERSION}"
LOCAL_BASE = "localhost/debian-base:bookworm"     # deploy/setup.d/70-podman.sh makes it
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PIP_CACHE = REPO / ".cache" / "pip"
WHEELHOUSE = PIP_CACHE / "wheelhouse"
IGNORE = shutil.ignore_patterns(".git", ".venv", ".cache", "run", "lake", "build", "dist", "*.egg-info",
                                "__pycache__", ".pytest_cache")


class ImageError(RuntimeError):
    pass


def _run(cmd: list[str], what: str, timeout: float, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what}: no end after {timeout:g}s: {' '.join(cmd)}") from None
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return p.stdout


def build_wheel(out_dir: Path, python: str = sys.executable) -> Path:
    """The project's wheel, built from a copy of the checkout into out_dir; its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="smartcity-wheel-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(REPO, src, ignore=IGNORE, symlinks=True)
        pip = [python, "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "download", "--cache-dir", str(PIP_CACHE), "--dest", str(WHEELHOUSE),
              *PYPROJECT["build-system"]["requires"]],
             "downloading the build requirements from the package index", 600)
        _run([*pip, "wheel", "--cache-dir", str(PIP_CACHE), "--no-deps", "--no-index", "--find-links",
              str(WHEELHOUSE), "-w", str(out_dir), str(src)], "building the wheel", 600)
    wheels = sorted(out_dir.glob(f"smartcity-{VERSION}-*.whl"))
    if len(wheels) != 1:
        raise ImageError(f"expected one smartcity-{VERSION} wheel in {out_dir}, found {wheels}")
    return wheels[0]


def build_command(engine: str, context: Path, tag: str, base: str | None) -> list[str]:
    cmd = [engine, "build", "-f", str(REPO / "bridge" / "Dockerfile"), "-t", tag]
    if base:
        cmd += ["--build-arg", f"BASE_IMAGE={base}"]
    if Path(engine).name == "podman":
        cmd += ["--format", "docker", "--network", "host"]
        if HOST_CA.is_file():
            cmd += ["-v", f"{HOST_CA}:{HOST_CA}:ro"]
    return [*cmd, str(context)]


def build_bridge_image(engine: str = "podman", tag: str = BRIDGE_TAG, base: str | None = None,
                       wheel: Path | None = None, timeout_s: float = 900) -> str:
    """Build bridge/Dockerfile around the project's wheel (built now unless given); the tag."""
    if shutil.which(engine) is None:
        raise ImageError(f"{engine} not found (deploy/setup.d/70-podman.sh installs podman)")
    with tempfile.TemporaryDirectory(prefix="smartcity-image-") as tmp:
        context = Path(tmp) / "context"
        context.mkdir()
        if wheel is None:
            wheel = build_wheel(Path(tmp) / "dist")
        shutil.copy2(wheel, context / wheel.name)
        _run(build_command(engine, context, tag, base), f"{engine} build of {tag}", timeout_s)
    return tag


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.images", description=__doc__.split("\n\n")[0])
    p.add_argument("image", choices=["bridge"])
    p.add_argument("--engine", default="podman", help="podman (default) or docker")
    p.add_argument("--base", help=f"base image (default: the Dockerfile's; CI: {LOCAL_BASE})")
    p.add_argument("--tag", default=BRIDGE_TAG)
    a = p.parse_args(argv)
    try:
        print(build_bridge_image(a.engine, a.tag, a.base))
    except ImageError as e:
        print(f"deploy.images: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
