"""The shape of the code, from its own imports (docs/architecture.md, "Layers"):

    tests, bench, deploy              harnesses, benchmarks, the dev stack: on top, imported by no service
    edge | bridge | spark_jobs | analytics | warehouse   the services, side by side: none imports another
    sim                               the simulated hardware behind the real drivers (edge --simulate)
    contracts | runtime | catalog     the ground: record types; settings, logging, metrics, sd_notify;
                                      where the lake's Iceberg catalog is and how to read it

An import may only go down (or stay inside its own package)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = ("contracts", "runtime", "catalog", "sim", "edge", "bridge", "spark_jobs", "analytics", "warehouse")
TOP = ("tests", "bench", "deploy")
# What each installed package may import from the project, besides itself.
ALLOWED = {
    "contracts": set(),
    "runtime": set(),
    "catalog": {"contracts", "runtime"},
    "sim": {"contracts", "runtime"},
    "edge": {"contracts", "runtime", "sim"},
    "bridge": {"contracts", "runtime"},
    "spark_jobs": {"contracts", "runtime", "catalog"},
    "analytics": {"contracts", "runtime", "catalog"},
    "warehouse": {"contracts", "runtime", "catalog"},
}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages a file imports (smartcity.X, or a bare X of the checkout)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "smartcity" and len(parts) > 1:
                out.add(parts[1])
            elif parts[0] in INSTALLED + TOP:
                out.add(parts[0])
    return out


def graph() -> dict[str, dict[str, set[str]]]:
    """package -> {file: imported project packages}."""
    return {pkg: {str(f.relative_to(ROOT)): project_imports(f) for f in sorted((ROOT / pkg).rglob("*.py"))}
            for pkg in INSTALLED}


@pytest.mark.parametrize("pkg", INSTALLED)
def test_each_package_imports_only_what_lies_below_it(pkg):
    bad = {f: sorted(imps - ALLOWED[pkg] - {pkg}) for f, imps in graph()[pkg].items()
           if imps - ALLOWED[pkg] - {pkg}}
    assert not bad, f"{pkg} imports above or beside itself: {bad}"


def test_installed_code_imports_the_namespace_not_the_checkout_folders():
    """`import edge` works only in a checkout; installed, everything is smartcity.*"""
    bare = {}
    for pkg in INSTALLED:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(f.read_text())
            for node in ast.walk(tree):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                        [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                        else [])
                bare.update({str(f.relative_to(ROOT)): m for m in mods if m.split(".")[0] in INSTALLED + TOP})
    assert not bare, bare


def test_the_graph_reads_imports_it_is_given():
    """The checker itself: a file importing a service from another service is caught."""
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as t:
        t.write("import os\nfrom smartcity.edge.agent import main\nimport deploy.local.kafka\n"
                "from .core import x\n")
    try:
        assert project_imports(Path(t.name)) == {"edge", "deploy"}
    finally:
        Path(t.name).unlink()
