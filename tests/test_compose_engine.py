"""docker-compose.yml in a real Docker engine: the classroom, end to end.

tests/test_compose.py runs each service's command as a local process; this runs
the file itself. A private dockerd (its data, its socket, everything under one
temporary folder, removed at the end) and docker-compose (Debian's, 1.29: it has
profiles) bring up the classroom the way the README says:

- `up -d` starts the six servers, and only them, each healthy;
- one load run per server, its exit status passed through (--exit-code-from);
- `--scale load=3` with the bank scenario, each replica's invariant holding;
- the bench profile, every server in turn;
- the locust profile: a master and two worker containers, one verdict;
- a failing load run fails `up`.

No image can be pulled here, so the base images are built from Debian: a
debootstrap of bookworm (its python3 is 3.11) with pip, imported as
python:3.11-slim, the Dockerfile's FROM; with redis-server in it too, the same
image stands in for redis:7-alpine. Builds use the host's network (`dockerd
--iptables=false` gives containers no route out). The servers' ports are
published on a loopback address of their own, not 127.0.0.1, so a server another
test left on 7070 does not matter.

Needs root, dockerd, docker, docker-compose and debootstrap (`apt-get install
docker.io docker-compose debootstrap`) and a network to reach Debian and PyPI;
skips, saying which, without them. About three minutes.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from contend.server import MODEL_MODULES
from tests.servers import CONTEND, ROOT

# The first test's time includes building the base and the image (about two minutes).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SERVERS = [*MODEL_MODULES, "redis"]
PUBLISHED = {"threads": 7070, "selectors": 7071, "trio": 7072, "asyncio": 7073,
             "processes": 7074, "redis": 7079}   # docker-compose.yml's host ports
# A `"` and a `$(...)`: every setting must reach the containers as data.
PASSWORD = 'class "room" $(exit 7) secret'
PROJECT = "contend-engine-test"
TOOLS = ("dockerd", "docker", "docker-compose", "debootstrap")
# What the stand-in base needs: the Dockerfile's python3 and pip (useradd is in
# minbase), and redis-server and redis-cli for the redis service.
BASE_PACKAGES = "python3,python3-pip,python3-venv,redis-server,redis-tools"
MIRROR = os.environ.get("CONTEND_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def why_no_engine() -> str | None:
    if os.geteuid() != 0:
        return "starting dockerd needs root"
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        return (f"{', '.join(missing)} not installed "
                "(apt-get install docker.io docker-compose debootstrap)")
    return None


class Engine:
    """A dockerd of our own: socket, data and run state all under `state`."""

    def __init__(self, state: Path):
        self.state = state
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{state}/docker.sock"}
        # Open as long as dockerd runs; closed in stop().
        self.log = open(state / "dockerd.log", "wb")  # noqa: SIM115
        self.dockerd = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip-forward=false",
             "--data-root", str(state / "root"), "--exec-root", str(state / "exec"),
             "--pidfile", str(state / "docker.pid"), "-H", f"unix://{state}/docker.sock"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, within: float = 60) -> str | None:
        """None once the engine answers, or why it never will."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.dockerd.poll() is not None:
                return f"dockerd exited ({self.dockerd.returncode}): {self.log_tail()}"
            if self.docker("version", check=False).returncode == 0:
                return None
            time.sleep(0.5)
        return f"dockerd did not answer within {within} s: {self.log_tail()}"

    def log_tail(self) -> str:
        return (self.state / "dockerd.log").read_text(errors="replace")[-1500:]

    def docker(self, *args: str, check: bool = True, timeout: float = 60,
               **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True,
                              timeout=timeout, **kwargs)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def stop(self) -> None:
        if self.dockerd.poll() is None:
            self.dockerd.terminate()
            try:
                self.dockerd.wait(60)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait()
        self.log.close()
        # A dockerd killed mid-way can leave overlay mounts under its data root.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.state))), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.state, ignore_errors=True)


def build_base_images(engine: Engine) -> None:
    """python:3.11-slim and redis:7-alpine, from a debootstrap of Debian bookworm."""
    rootfs = engine.state / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}",
                    "bookworm", str(rootfs), MIRROR],
                   check=True, capture_output=True, timeout=900)
    # The python image's pip installs system-wide; Debian's refuses to (PEP 668).
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    # This machine's trust store, so pip in the build reaches PyPI through whatever
    # TLS proxy this machine trusts (Debian's pip reads the system bundle).
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        (rootfs / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    engine.docker("import", "--change", 'CMD ["python3"]', "-", "python:3.11-slim",
                  stdin=tar.stdout, timeout=300)
    assert tar.wait() == 0
    engine.docker("tag", "python:3.11-slim", "redis:7-alpine")
    shutil.rmtree(rootfs)


class Classroom:
    """docker-compose on this checkout's docker-compose.yml, in the private engine."""

    def __init__(self, engine: Engine, publish: str):
        self.engine = engine
        self.publish = publish

    def compose(self, *args: str, timeout: float = 180,
                **settings: str) -> subprocess.CompletedProcess:
        env = {**self.engine.env, "CONTEND_PASSWORD": PASSWORD, "CONTEND_PUBLISH": self.publish,
               "COMPOSE_PROJECT_NAME": PROJECT, **settings}
        for name in ("TARGET", "SCENARIO", "CLIENTS", "DURATION", "PREFIX", "WORKERS"):
            if name not in settings:
                env.pop(name, None)   # the file's defaults, not whatever this shell has
        return subprocess.run(["docker-compose", "--project-directory", str(ROOT),
                               "-f", str(ROOT / "docker-compose.yml"), *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def containers(self, service: str | None = None, every: bool = False) -> list[str]:
        filters = ["--filter", f"label=com.docker.compose.project={PROJECT}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        done = self.engine.docker("ps", "-q", *(["-a"] if every else []), *filters, text=True)
        return done.stdout.split()

    def inspect(self, container: str, template: str) -> str:
        return self.engine.docker("inspect", "-f", template, container, text=True).stdout.strip()


@pytest.fixture(scope="module")
def engine():
    reason = why_no_engine()
    if reason:
        pytest.skip(reason)
    # Short: the socket's path must fit in a sockaddr_un.
    state = Path(tempfile.mkdtemp(prefix="contend-engine-", dir="/tmp"))
    try:
        engine = Engine(state)
    except BaseException:
        shutil.rmtree(state)
        raise
    try:
        reason = engine.wait_ready()
        if reason:
            pytest.skip(f"no Docker engine could be started here: {reason}")
        started = time.monotonic()
        build_base_images(engine)
        # Compose would build it too, but with the engine's network: none here.
        engine.docker("build", "--network", "host", "-t", "contend:latest", str(ROOT),
                      timeout=900)
        print(f"\nbase and image built in {time.monotonic() - started:.0f} s")
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def classroom(engine):
    publish = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.1"
    room = Classroom(engine, publish)
    try:
        started = room.compose("up", "-d")
        assert started.returncode == 0, started.stdout + started.stderr
        yield room
    finally:
        room.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


def test_up_d_starts_only_the_servers_and_each_becomes_healthy(classroom):
    running = {classroom.inspect(c, '{{index .Config.Labels "com.docker.compose.service"}}')
               for c in classroom.containers()}
    assert running == set(SERVERS)   # load and bench wait for their profiles
    deadline = time.monotonic() + 120
    while True:
        health = {service: classroom.inspect(classroom.containers(service)[0],
                                             "{{.State.Health.Status}}")
                  for service in SERVERS}
        if set(health.values()) == {"healthy"}:
            break
        assert time.monotonic() < deadline, health
        time.sleep(1)
    # One image for the contend services, built once.
    images = {classroom.inspect(classroom.containers(model)[0], "{{.Image}}")
              for model in MODEL_MODULES}
    assert len(images) == 1


def test_published_ports_answer_with_the_password(classroom):
    assert set(PUBLISHED) == set(SERVERS)
    for service, port in PUBLISHED.items():
        done = subprocess.run([*CONTEND, "ping", "--target", f"{classroom.publish}:{port}",
                               "--password", PASSWORD],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (service, done.stderr)


@pytest.mark.parametrize("target", SERVERS)
def test_one_load_run_per_server_holds_and_passes_its_exit_status(classroom, target):
    done = classroom.compose("--profile", "load", "up", "--exit-code-from", "load", "load",
                             TARGET=target, SCENARIO="incr", CLIENTS="4", DURATION="2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "invariant holds" in done.stdout, done.stdout


def test_scaled_bank_replicas_each_keep_their_own_invariant(classroom):
    """The README's `TARGET=trio SCENARIO=bank docker compose up --scale load=5 load`."""
    done = classroom.compose("up", "--scale", "load=3", "load", TARGET="trio",
                             SCENARIO="bank", CLIENTS="4", DURATION="3")
    assert done.returncode == 0, done.stdout + done.stderr
    replicas = classroom.containers("load", every=True)
    assert len(replicas) == 3
    for replica in replicas:
        assert classroom.inspect(replica, "{{.State.ExitCode}}") == "0"
        logs = classroom.engine.docker("logs", replica, text=True).stdout
        assert "invariant holds" in logs and "destroyed" not in logs, logs
    assert done.stdout.count("invariant holds") == 3, done.stdout


def test_bench_profile_runs_every_server_in_turn(classroom):
    done = classroom.compose("--profile", "bench", "up", "--exit-code-from", "bench", "bench",
                             CLIENTS="2", DURATION="1")
    assert done.returncode == 0, done.stdout + done.stderr
    for service in SERVERS:
        assert f"== {service}:7070" in done.stdout, done.stdout
    assert done.stdout.count("invariant holds") == len(SERVERS), done.stdout


def test_locust_profile_runs_a_master_and_scaled_workers_with_one_verdict(classroom):
    """The README's `WORKERS=2 docker compose --profile locust up --exit-code-from
    locust-master locust-master locust-worker`: one incr load from two worker containers."""
    done = classroom.compose("--profile", "locust", "up", "--exit-code-from", "locust-master",
                             "locust-master", "locust-worker", TARGET="selectors",
                             SCENARIO="incr", CLIENTS="4", DURATION="2", WORKERS="2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "invariant holds" in done.stdout, done.stdout
    assert len(classroom.containers("locust-worker", every=True)) == 2


def test_a_failing_load_run_fails_up(classroom):
    done = classroom.compose("--profile", "load", "up", "--exit-code-from", "load", "load",
                             SCENARIO="no-such-scenario")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "invalid choice" in done.stdout + done.stderr


def test_down_removes_every_container(classroom):
    done = classroom.compose("down", "--timeout", "5")
    assert done.returncode == 0, done.stderr
    assert classroom.containers(every=True) == []
