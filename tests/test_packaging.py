"""One package: an install adds exactly one import name, `contend`, to site-packages.

The repository keeps its folders (server/, client/, shared/); pyproject.toml's
package-dir maps them under `contend`. Generic top-level names would collide
with other packages (another `shared/` overwrote ours) and with a student's
own `server.py` in the current folder.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.servers import ROOT

PRODUCT = ["server", "client", "shared", "contend"]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_product_imports_itself_only_as_contend():
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            stray = {name for name in imported_modules(path)
                     if name.split(".")[0] in ("server", "client", "shared")}
            assert not stray, f"{path.relative_to(ROOT)} imports {stray}; use contend.*"


def test_shared_imports_no_sockets_threads_or_event_loops():
    forbidden = {"socket", "threading", "selectors", "trio", "asyncio", "multiprocessing"}
    for path in (ROOT / "shared").rglob("*.py"):
        used = {name.split(".")[0] for name in imported_modules(path)} & forbidden
        assert not used, f"{path.relative_to(ROOT)} imports {used}: shared/ is sans-io"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    where = tmp_path_factory.mktemp("venv")
    # contend's own dependencies come from this interpreter's site-packages; contend
    # itself is installed into the venv's, which comes first on its path.
    venv.create(where, with_pip=True, system_site_packages=True)
    python = where / "bin" / "python"
    before = set(site_packages(python).iterdir())
    # Built from a copy, so setuptools' build/ folder lands there and not in the checkout.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("contend", "server", "client", "shared"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return python, before


def site_packages(python: Path) -> Path:
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    out = subprocess.run([str(python), "-c", where],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def test_an_install_adds_one_top_level_name(fresh_venv):
    python, before = fresh_venv
    added = set(site_packages(python).iterdir()) - before
    names = {path.name for path in added if not path.name.endswith((".dist-info", ".pth"))}
    assert names == {"contend"}, names


def test_generic_names_stay_free_and_contend_runs(fresh_venv, tmp_path):
    python, _ = fresh_venv
    # A student's own server.py in the current folder is theirs; contend is not confused by it.
    (tmp_path / "server.py").write_text("raise SystemExit('the student server ran')\n")
    for name in ("shared", "client"):
        done = subprocess.run([str(python), "-c", f"import {name}"], cwd=tmp_path,
                              capture_output=True, text=True)
        assert "ModuleNotFoundError" in done.stderr, (name, done.stderr)
    done = subprocess.run([str(python), "-m", "contend", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "serve" in done.stdout, done.stderr
    done = subprocess.run([str(python), "-m", "contend.server", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--model" in done.stdout, done.stderr
    assert sys.executable != str(python)   # the venv was never activated: no PATH involved
