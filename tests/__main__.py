"""`python3 -m tests`: install what the tests need, then run them all.

On a fresh machine with Python 3 and pip this installs contend with its test
extras, and Debian's redis-server and redis-tools (the reference server and
the real clients the suite talks to) when they are missing, then runs pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REDIS_TOOLS = ("redis-server", "redis-cli", "redis-benchmark")


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def install_redis() -> None:
    if all(shutil.which(tool) for tool in REDIS_TOOLS):
        return
    apt = shutil.which("apt-get")
    if apt is None:
        sys.exit("The tests need redis-server, redis-cli and redis-benchmark; install Redis "
                 "(for example `brew install redis`) and run again.")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*sudo, apt, "update", "-q"],
                    [*sudo, apt, "install", "-y", "-q", "redis-server", "redis-tools"]):
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True, env=env)


def main(argv: list[str]) -> int:
    install_redis()
    run(sys.executable, "-m", "pip", "install", "-q", "-e", ".[test]")
    return subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
