"""`python3 -m tests`: install what the tests need, then run them all.

On a fresh machine with Python 3 and pip this installs contend with its test
extras (and Locust, `.[locust]`, for tests/test_locust.py), and Debian's
redis-server and redis-tools (the reference server and the real clients the
suite talks to), docker-compose, docker.io and debootstrap
(tests/test_compose_engine.py starts a real engine on a base image it builds),
and tmux (tests/test_top.py) when they are missing, then runs
the linters (ruff over the repository, mypy over shared/: tests/lint.py) and pytest.

Then the same suite again on a free-threaded CPython (PEP 703), the GIL off:
scripts/free-threaded-python.sh finds one or builds it once per machine (about
ten minutes, cached in /opt/python3.13t); contend and its test extras go into
it too (not Locust: gevent has no wheel for it, and tests/test_locust.py
skips). `CONTEND_FREE_THREADED=skip` leaves that run out (it is never skipped
under CI, where a failure to get the interpreter fails the run).
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
                   "redis-benchmark": "redis-tools", "docker-compose": "docker-compose",
                   "tmux": "tmux",   # tests/test_top.py drives `contend top` in a real terminal
                   # tests/test_compose_engine.py: a real engine, and a base image built here
                   "dockerd": "docker.io", "docker": "docker.io", "debootstrap": "debootstrap"}


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def install_tools() -> None:
    missing = [tool for tool in DEBIAN_PACKAGES if not shutil.which(tool)]
    if missing:
        install_packages(sorted({DEBIAN_PACKAGES[tool] for tool in missing}))


def install_packages(packages: list[str]) -> None:
    apt = shutil.which("apt-get")
    if apt is None:
        sys.exit(f"The tests need Debian's {', '.join(packages)}; install them (for example "
                 "`brew install redis docker-compose`) and run again.")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*sudo, apt, "update", "-q"],
                    [*sudo, apt, "install", "-y", "-q", *packages]):
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True, env=env)


def free_threaded_python() -> str | None:
    """The free-threaded interpreter, with contend and its test extras installed in it."""
    if os.environ.get("CONTEND_FREE_THREADED") == "skip" and not os.environ.get("CI"):
        return None
    found = subprocess.run(["bash", "scripts/free-threaded-python.sh"], cwd=ROOT,
                           stdout=subprocess.PIPE, text=True)
    if found.returncode != 0:
        if os.environ.get("CI"):
            sys.exit("could not get a free-threaded CPython (scripts/free-threaded-python.sh)")
        print("no free-threaded CPython here: its run is left out", flush=True)
        return None
    python = found.stdout.strip()
    # --prefer-binary: packages with no free-threaded wheel take an older one that has one.
    run(python, "-m", "pip", "install", "-q", "--prefer-binary", "-e", ".[test]")
    return python


def externally_managed() -> bool:
    """Debian's and Ubuntu's system Python refuse `pip install` outside a venv (PEP 668)."""
    import sysconfig
    return (sys.prefix == sys.base_prefix
            and (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists())


def into_a_venv(argv: list[str]) -> None:
    """Run again from ROOT/.venv (made if missing: the README's quick start makes the same)."""
    venv = ROOT / ".venv"
    python = venv / "bin" / "python"
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)])
        if made.returncode != 0:   # Debian keeps ensurepip in python3-venv
            install_packages(["python3-venv"])
            run(sys.executable, "-m", "venv", str(venv))
    print(f"+ {sys.executable} is externally managed (PEP 668): running from {venv}", flush=True)
    os.execv(python, [str(python), "-m", "tests", *argv])


def main(argv: list[str]) -> int:
    if externally_managed():
        into_a_venv(argv)
    install_tools()
    # Locust (tests/test_locust.py) on this interpreter only: gevent, which it needs, has no
    # wheel for the free-threaded one, whose run skips those tests.
    run(sys.executable, "-m", "pip", "install", "-q", "-e", ".[test,lint,locust]")
    free_threaded = free_threaded_python()
    env = dict(os.environ)
    if free_threaded:
        env["CONTEND_FREE_THREADED_PYTHON"] = free_threaded
    linted = subprocess.run([sys.executable, "-m", "tests.lint"], cwd=ROOT).returncode
    tested = subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=ROOT, env=env).returncode
    if free_threaded:
        print(f"+ the suite again on {free_threaded} (the GIL off)", flush=True)
        # The editable install above points the free-threaded interpreter's contend here.
        # The Docker classroom runs the image's own Python, whichever runs pytest: once is enough.
        tested = subprocess.run([free_threaded, "-m", "pytest", "--ignore",
                                 "tests/test_compose_engine.py", *argv], cwd=ROOT,
                                env=env).returncode or tested
    return tested or linted


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
