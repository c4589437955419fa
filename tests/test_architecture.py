"""The architecture, enforced: the import contract (.importlinter), what importing the light parts loads,
private names, function-level imports, and one definition of the run folder's file names."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

from tests.conftest import ROOT

CODE = [*sorted((ROOT / "s2core").rglob("*.py")), *sorted((ROOT / "tiles_server").rglob("*.py")),
        *sorted((ROOT / "pages").rglob("*.py")), ROOT / "app.py"]
HEAVY = ("cv2", "scipy", "onnxruntime", "onnx", "distributed", "dask", "lightgbm", "pystac_client")


def test_import_contract_is_kept(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Every contract of .importlinter holds (stages, model values only, no UI in s2core, a light tile
    server, Dask only in run.cluster, no cycles); run `lint-imports` for the import chains of a break."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    code = lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    assert re.search(r"Contracts: 6 kept, 0 broken", out), out[-2000:]


@pytest.mark.parametrize("module, forbidden", [
    ("tiles_server", HEAVY),
    ("s2core", ("rasterio", "numpy", *HEAVY)),  # the package itself is lazy: its public names load on use
    ("s2core.model.request", HEAVY),
    ("s2core.runfolder.stats", HEAVY),
])
def test_light_imports_load_no_processing_library(module: str, forbidden: tuple[str, ...]):
    code = ("import sys, json, importlib; importlib.import_module(%r); "
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))") % module
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(forbidden), f"import {module} loads {sorted(loaded & set(forbidden))}"


def test_public_api_names_resolve_even_after_every_submodule_is_imported():
    """A submodule named like a public name (s2core/plan.py vs s2core.plan) would shadow it once imported."""
    import importlib
    import pkgutil
    import types

    import s2core

    for mod in pkgutil.walk_packages(s2core.__path__, "s2core."):
        importlib.import_module(mod.name)
    for name in s2core.__all__:
        value = getattr(s2core, name)
        assert value is not None and not isinstance(value, types.ModuleType), f"s2core.{name} is a module"
    with pytest.raises(AttributeError):
        getattr(s2core, "no_such_name")


def _imports(path: Path) -> list[tuple[ast.AST, bool]]:
    """(import node, inside a function) for every import of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return [(n, id(n) in inner) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in CODE:
        for node, _ in _imports(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("s2core", "tiles_server", "pages")):
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                              for a in node.names if re.match(r"_[^_]", a.name)]
    assert not offenders, "private names imported from another module: " + ", ".join(offenders)


def test_function_level_imports_are_commented():
    """Function-level imports exist only for optional heavy dependencies, each with a comment saying why."""
    offenders = []
    for path in CODE:
        lines = path.read_text(encoding="utf-8").splitlines()
        for node, inside in _imports(path):
            if inside and "#" not in lines[node.lineno - 1]:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not offenders, "uncommented function-level imports:\n" + "\n".join(offenders)


def test_output_file_names_live_in_the_layout_table():
    """File names of the acquisition folder are written once, in s2core/runfolder/layout.py."""
    from s2core.runfolder.layout import ROLES

    names = {r.file for r in ROLES.values()}
    pattern = re.compile(r"""["'](%s)["']""" % "|".join(re.escape(n) for n in names))
    offenders = []
    for path in CODE:
        if path.name == "layout.py":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "output file names outside the layout table:\n" + "\n".join(offenders)


def test_scl_and_mask_codes_have_one_table():
    """The SCL -> mask mapping and the class names are defined once (s2core/model/classes.py)."""
    from s2core.model.classes import MASK_CLASSES, SCL_NAMES, SCL_TO_MASK, product_mask_from_scl
    import numpy as np

    scl = np.arange(256, dtype=np.uint8)
    mask = product_mask_from_scl(scl)
    assert all(mask[code] == SCL_TO_MASK[code] for code in SCL_NAMES)
    assert set(mask[12:].tolist()) == {1}  # invalid SCL codes count as clear
    assert set(SCL_TO_MASK.values()) <= set(MASK_CLASSES)
    defs = [p.relative_to(ROOT) for p in CODE if re.search(r"^SCL_TO_MASK\b|^MASK_CLASSES\b|^SCL_NAMES\b",
                                                           p.read_text(encoding="utf-8"), re.M)]
    assert defs == [Path("s2core/model/classes.py")], defs
