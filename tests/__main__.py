"""`python3 -m tests`: install what the tests need, then run them all.

On a fresh machine with Python 3 and pip this installs contend with its test
extras, and Debian's redis-server and redis-tools (the reference server and
the real clients the suite talks to) and docker-compose (which validates
docker-compose.yml; no Docker engine needed) when they are missing, then runs
the linters (ruff over the repository, mypy over shared/: tests/lint.py) and pytest.
Arguments go to pytest: `python3 -m tests -m "not slow"` is the fast tier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# tool -> the Debian package that provides it
DEBIAN_PACKAGES = {"redis-server": "redis-server", "redis-cli": "redis-tools",
                   "redis-benchmark": "redis-tools", "docker-compose": "docker-compose"}


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def install_tools() -> None:
    missing = [tool for tool in DEBIAN_PACKAGES if not shutil.which(tool)]
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None:
        sys.exit(f"The tests need {', '.join(missing)}; install them (for example "
                 "`brew install redis docker-compose`) and run again.")
    packages = sorted({DEBIAN_PACKAGES[tool] for tool in missing})
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*sudo, apt, "update", "-q"],
                    [*sudo, apt, "install", "-y", "-q", *packages]):
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True, env=env)


def main(argv: list[str]) -> int:
    install_tools()
    run(sys.executable, "-m", "pip", "install", "-q", "-e", ".[test]")
    linted = subprocess.run([sys.executable, "-m", "tests.lint"], cwd=ROOT).returncode
    tested = subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=ROOT).returncode
    return tested or linted


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
