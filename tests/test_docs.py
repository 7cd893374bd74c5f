"""Every reference in the docs and the code points at something that exists.

- a Markdown link to a file of the repository names a file that is there;
- a file path in backticks (`shared/session.py`, optionally `: Name`) exists, and so does the name;
- a `module.Name` in backticks, for a module of the product, resolves;
- a repository path named in a docstring or comment of the code exists.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.servers import ROOT

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "labs").glob("*.md")])
CODE = sorted(path for folder in ("server", "client", "shared", "contend", "tests", "labs")
              for path in (ROOT / folder).rglob("*.py"))
FOLDERS = {"server": "contend.server", "client": "contend.client", "shared": "contend.shared",
           "shared/commands": "contend.shared.commands", "tests": "tests", "contend": "contend"}

LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")
PATH = re.compile(r"`((?:server|client|shared|tests|docs|labs|contend)/[\w/.-]+)(?::\s*([\w.]+))?`")
DOTTED = re.compile(r"`(\w+)\.([A-Za-z_][\w.]*)`")
QUALIFIED = re.compile(r"`(contend(?:\.\w+)+)`")
FILE_ENDINGS = {"md", "py", "csv", "json", "png", "txt", "yml", "toml"}
PATH_IN_CODE = re.compile(r"\b((?:server|client|shared|tests|docs|labs)/[\w/-]+\.(?:py|md|png))\b")


def modules_by_stem() -> dict[str, str]:
    """The product's modules by file name (threads_sync -> contend.server.threads_sync)."""
    found: dict[str, list[str]] = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).glob("*.py"):
            if path.stem not in ("__init__", "__main__"):
                found.setdefault(path.stem, []).append(f"{package}.{path.stem}")
    # Only names that mean one module: `pool.x` could be shared/pool.py or a command module.
    return {stem: modules[0] for stem, modules in found.items() if len(modules) == 1}


STEMS = modules_by_stem()


def module_of(path: str) -> str:
    folder, _, file = path.rpartition("/")
    return f"{FOLDERS[folder]}.{Path(file).stem}"


def resolves(module: str, dotted: str) -> bool:
    target = importlib.import_module(module)
    for part in dotted.split("."):
        if not hasattr(target, part):
            return False
        target = getattr(target, part)
    return True


def qualified_resolves(qualified: str) -> bool:
    """`contend.server.serve`: the longest importable prefix, then attributes."""
    parts = qualified.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        return cut == len(parts) or resolves(".".join(parts[:cut]), ".".join(parts[cut:]))
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_reference_in_a_document_resolves(doc):
    text = doc.read_text()
    broken = []
    for target in LINK.findall(text):
        if "://" not in target and not (doc.parent / target).exists():
            broken.append(f"link {target}")
    for path, name in PATH.findall(text):
        if not (ROOT / path).exists():
            broken.append(f"path {path}")
        elif name and path.endswith(".py") and not resolves(module_of(path), name):
            broken.append(f"{path}: {name}")
    for stem, name in DOTTED.findall(text):
        if stem in STEMS and name not in FILE_ENDINGS and not resolves(STEMS[stem], name):
            broken.append(f"{stem}.{name}")
    for qualified in QUALIFIED.findall(text):
        if not qualified_resolves(qualified):
            broken.append(qualified)
    assert not broken, f"{doc.relative_to(ROOT)} names what does not exist: {broken}"


def test_every_path_named_in_the_code_exists():
    broken = [f"{path.relative_to(ROOT)}: {named}" for path in CODE
              for named in PATH_IN_CODE.findall(path.read_text())
              if not (ROOT / named).exists()]
    assert not broken, broken


def test_the_design_document_exists_and_is_linked_from_the_readme():
    assert (ROOT / "docs" / "design.md").exists()
    assert "(docs/design.md)" in (ROOT / "README.md").read_text()
