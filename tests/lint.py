"""`python3 -m tests.lint`: ruff over the repository, mypy over the sans-io core.

`python3 -m tests` runs this before pytest, so CI runs it too. mypy cannot
follow setuptools' editable-install hook, so it reads `contend.shared` from a
throwaway folder of links that lays the package out as an install would.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ruff() -> int:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT).returncode


def mypy() -> int:
    with tempfile.TemporaryDirectory() as where:
        package = Path(where) / "contend"
        package.mkdir()
        (package / "__init__.py").symlink_to(ROOT / "contend" / "__init__.py")
        (package / "shared").symlink_to(ROOT / "shared")
        return subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                               str(ROOT / "pyproject.toml"), "-p", "contend.shared"],
                              cwd=where, env={"MYPYPATH": where, "PATH": ""}).returncode


def main() -> int:
    failed = [name for name, check in (("ruff", ruff), ("mypy", mypy)) if check()]
    if failed:
        print(f"lint failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
