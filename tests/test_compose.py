"""docker-compose.yml and the Dockerfile: valid, and every service's command really works.

No Docker engine is needed. `docker-compose config` (Debian's docker-compose,
which `python3 -m tests` installs) validates the file and does the variable
interpolation; then each service's command runs here, as a local process,
with the service names pointing at 127.0.0.1 and each server's port 7070
moved to a free loopback port: the servers, their healthchecks, the load
service against every target, and the bench service. The password has a `"`
and a `$(...)` in it, so a setting pasted into a shell string fails here.
tests/test_compose_engine.py runs the same file in a real Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from contend.server import MODEL_MODULES
from tests.servers import CONTEND, ROOT, free_port

COMPOSE_PORT = "7070"   # every server listens on it inside its own container
PROFILES = ["--profile", "bench", "--profile", "load", "--profile", "locust"]
# A shell would end the string at the `"` and run the `$(...)`: settings must reach
# a service's script through its environment, never pasted into it.
PASSWORD = 'class "room" $(exit 7) secret'
COMPOSE_DOCS = [ROOT / "docker-compose.yml", ROOT / "labs" / "README.md", ROOT / "README.md"]
# Every model built so far needs its service (a new model fails here until it has one).
SERVERS = [*MODEL_MODULES, "redis"]


def docker_compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    executable = shutil.which("docker-compose")
    assert executable, ("docker-compose is not installed: `python3 -m tests` installs "
                        "Debian's docker-compose, or apt-get install docker-compose")
    return subprocess.run([executable, "--project-directory", str(ROOT),
                           "-f", str(ROOT / "docker-compose.yml"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def resolved_config(**env: str) -> dict:
    """The compose file as docker-compose itself reads it, variables substituted."""
    done = docker_compose(*PROFILES, "config", env=env)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def dockerfile_entrypoint() -> list[str]:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            return json.loads(line.removeprefix("ENTRYPOINT "))
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


# -- the file itself ----------------------------------------------------------

def test_docker_compose_config_accepts_the_file():
    for env in ({}, {"CONTEND_PASSWORD": PASSWORD, "TARGET": "trio", "CONTEND_SYNC": "off"}):
        done = docker_compose(*PROFILES, "config", "-q", env=env)
        assert done.returncode == 0, done.stderr


def test_up_with_no_profile_starts_only_the_servers():
    """`docker compose up -d` is the servers; load and bench run when asked for.
    (docker-compose 1.29's `config --services` lists every profile's services, so the
    engine tier checks what `up -d` really starts.)"""
    services = resolved_config()["services"]
    assert not any(services[name].get("profiles") for name in SERVERS)
    assert services["load"]["profiles"] == ["load"]
    assert services["bench"]["profiles"] == ["bench"]


def test_one_service_builds_the_image_the_others_run():
    services = resolved_config()["services"]
    contend = [name for name, spec in services.items() if spec["image"] == "contend:latest"]
    assert sorted(contend) == sorted([*MODEL_MODULES, "load", "bench", "locust-master",
                                      "locust-worker"])
    assert [name for name in services if "build" in services[name]] == ["threads"]
    # The builder keeps the default policy (build when missing); the rest wait for it.
    assert "pull_policy" not in services["threads"]
    for name in contend:
        if name != "threads":
            assert services[name]["pull_policy"] == "never", name


def test_healthchecks_are_a_raw_ping_not_a_whole_contend_process():
    services = resolved_config(CONTEND_PASSWORD=PASSWORD)["services"]
    for model in MODEL_MODULES:
        healthcheck = services[model]["healthcheck"]
        assert healthcheck["test"][:3] == ["CMD", "python3", "-c"], model
        assert "contend" not in " ".join(healthcheck["test"]), model
        assert healthcheck["interval"] in ("5s", "10s"), model
    assert services["redis"]["healthcheck"]["test"][0] == "CMD-SHELL"


def test_settings_reach_shell_scripts_through_the_environment_only():
    """No setting is pasted into a shell string: a `"` or a `$(...)` in it stays data."""
    marker = 'pw"$(touch hacked)'
    services = resolved_config(CONTEND_PASSWORD=marker, TARGET="trio", SCENARIO="bank",
                               CLIENTS="3", DURATION="4242", PREFIX="mine")["services"]
    for name, spec in services.items():
        shells = [*spec.get("command", [])] if spec.get("entrypoint") == ["sh", "-c"] else []
        test = spec.get("healthcheck", {}).get("test", [])
        shells += test[1:] if test[:1] == ["CMD-SHELL"] else []
        for script in shells:
            assert "pw" not in script and "hacked" not in script, (name, script)
            for value in ("bank", "mine", "4242") + (("trio",) if name == "load" else ()):
                assert not re.search(rf"\b{value}\b", script), (name, value, script)


def test_each_load_replica_has_its_own_key_prefix():
    """Replicas sharing keys would reset and move each other's money: `bank` fails."""
    script = resolved_config()["services"]["load"]["command"][0]
    assert '--prefix "$${PREFIX:-$$HOSTNAME}"' in script


def test_locust_profile_runs_a_master_and_as_many_workers_as_it_waits_for():
    """`WORKERS=3 docker compose --profile locust up --exit-code-from locust-master`."""
    services = resolved_config(WORKERS="3")["services"]
    master, worker = services["locust-master"], services["locust-worker"]
    assert master["profiles"] == worker["profiles"] == ["locust"]
    assert worker["scale"] == 3 and master["environment"]["WORKERS"] == "3"
    script = master["command"][0]
    assert master["entrypoint"] == ["sh", "-c"] and script.startswith("exec contend load ")
    assert "--locust-master --locust-address 0.0.0.0:5557" in script
    assert '--expect-workers "$$WORKERS"' in script
    assert '--prefix "$${PREFIX:-$$HOSTNAME}"' in script
    # A worker needs only where the master is; the master hands it the rest.
    assert worker["command"] == ["load", "--locust-worker", "--locust-address",
                                 "locust-master:5557"]
    assert "entrypoint" not in worker and "environment" not in worker
    assert master["depends_on"] == {name: {"condition": "service_healthy"} for name in SERVERS}
    assert worker["depends_on"] == {"locust-master": {"condition": "service_started"}}
    # Workers scale: nothing fixed. The master's port is published like the servers'.
    assert "ports" not in worker and "container_name" not in worker
    assert master["ports"][0].startswith("127.0.0.1:5557:5557")


def test_locust_master_takes_its_settings_from_the_environment_only():
    marker = 'pw"$(touch hacked)'
    services = resolved_config(CONTEND_PASSWORD=marker, TARGET="trio", SCENARIO="bank",
                               CLIENTS="33", DURATION="4242", PREFIX="mine",
                               WORKERS="5")["services"]
    master = services["locust-master"]
    script = master["command"][0]
    assert "pw" not in script and "hacked" not in script
    for value in ("trio", "bank", "33", "4242", "mine", "5"):
        assert not re.search(rf"\b{value}\b", script), (value, script)
    assert master["environment"] == {
        "CONTEND_PASSWORD": marker.replace("$", "$$"), "TARGET": "trio:7070",
        "SCENARIO": "bank", "CLIENTS": "33", "DURATION": "4242", "PREFIX": "mine",
        "WORKERS": "5"}


def test_redis_turns_protected_mode_off_itself():
    command = resolved_config(CONTEND_PASSWORD=PASSWORD)["services"]["redis"]["command"]
    assert command[command.index("--protected-mode") + 1] == "no"
    assert command[command.index("--requirepass") + 1] == PASSWORD.replace("$", "$$")


def test_documented_client_runs_pass_their_exit_status_through():
    """`docker compose up` exits 0 whatever its containers did, unless told otherwise."""
    for document in COMPOSE_DOCS:
        runs = []
        for line in document.read_text().splitlines():
            command = line.lstrip("# ").split("#")[0]
            if re.match(r"(\w+=\S+ )*docker compose .*\bup\b.* (load|bench)\s*$", command):
                runs.append(command)
        assert runs, f"{document} shows no client run"
        for command in runs:
            # A scaled run has many exit statuses: the document reads them with `ps -a`.
            assert "--exit-code-from" in command or "--scale" in command, (document, command)
            # docker-compose 1.29 knows a service for --exit-code-from only if its
            # profile is on; naming the service (`up load`) is not enough there.
            chosen = re.search(r"--exit-code-from (\w+)", command)
            if chosen:
                assert f"--profile {chosen[1]} " in command, (document, command)
        if any("--scale" in command for command in runs):
            assert "docker compose ps -a load" in document.read_text(), document


def test_every_model_has_a_service_and_clients_wait_for_healthy_servers():
    services = resolved_config()["services"]
    assert set(SERVERS) <= set(services)
    assert services["redis"]["image"].startswith("redis:")
    for model in MODEL_MODULES:
        command = services[model]["command"]
        assert command[:3] == ["serve", "--model", model] and "0.0.0.0" in command
    for client in ("load", "bench"):
        assert services[client]["depends_on"] == {
            name: {"condition": "service_healthy"} for name in SERVERS}
    # `docker compose up --scale load=20` needs a load service with nothing fixed.
    assert "ports" not in services["load"] and "container_name" not in services["load"]
    assert services["bench"]["profiles"] == ["bench"]


def test_model_servers_turn_protected_mode_off_inside_their_containers():
    """Bound to 0.0.0.0 in a container, no client is on loopback: with no password,
    protected mode would deny every one (the published address is the guard)."""
    services = resolved_config()["services"]
    for model in MODEL_MODULES:
        command = services[model]["command"]
        assert command[command.index("--protected-mode") + 1] == "no", model


def test_the_dockerfile_runs_contend_as_a_user_not_root():
    text = (ROOT / "Dockerfile").read_text()
    assert dockerfile_entrypoint() == ["contend"]
    # with the locust extra: the compose profile `locust` runs master and workers from it
    assert "pip install '.[locust]'" in text and "\nUSER contend" in text
    assert text.startswith("#") and "FROM python:3.11-slim" in text


# -- every service's command, run on loopback -----------------------------------

class LocalCompose:
    """The compose services as local processes: names -> 127.0.0.1, 7070 -> a free port."""

    def __init__(self, config: dict):
        self.services = config["services"]
        self.ports = {name: free_port() for name in SERVERS}
        self.processes: dict[str, subprocess.Popen] = {}

    def localise(self, text: str, service: str) -> str:
        for name, port in self.ports.items():
            text = text.replace(f"{name}:{COMPOSE_PORT}", f"127.0.0.1:{port}")
        if service in self.ports:
            text = text.replace(COMPOSE_PORT, str(self.ports[service]))
        # `config` keeps `$$` (compose's escape for a literal `$`) as written.
        return text.replace("$$", "$").replace("0.0.0.0", "127.0.0.1")

    def argv(self, service: str) -> list[str]:
        """The container's entrypoint plus command, the way Docker joins them."""
        spec = self.services[service]
        entrypoint = spec.get("entrypoint") or (
            [] if spec["image"].startswith("redis:") else dockerfile_entrypoint())
        argv = [self.localise(part, service) for part in [*entrypoint, *spec["command"]]]
        if argv[0] == "contend":
            argv[:1] = CONTEND
        if service == "redis":   # not in the container: keep it off every other interface
            argv += ["--bind", "127.0.0.1"]
        return argv

    def environment(self, service: str, **extra: str) -> dict:
        # A service's shell string says `contend`: found beside this interpreter, not on a
        # PATH that only an activated venv would set.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        own = self.services[service].get("environment") or {}
        return {**os.environ, "PATH": path, "HOSTNAME": f"{service}-1",
                **{name: self.localise(str(value), service) for name, value in own.items()},
                **extra}

    def start(self, service: str) -> None:
        self.processes[service] = subprocess.Popen(
            self.argv(service), cwd=ROOT, env=self.environment(service),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def healthcheck(self, service: str) -> subprocess.CompletedProcess:
        test = self.services[service]["healthcheck"]["test"]
        kind, rest = test[0], [self.localise(part, service) for part in test[1:]]
        argv = rest if kind == "CMD" else ["sh", "-c", rest[0]]
        if argv[0] == "contend":
            argv[:1] = CONTEND
        return subprocess.run(argv, cwd=ROOT, env=self.environment(service),
                              capture_output=True, text=True, timeout=30)

    def wait_healthy(self, service: str, within: float = 20) -> None:
        deadline = time.monotonic() + within
        while True:
            checked = self.healthcheck(service)
            if checked.returncode == 0:
                return
            assert self.processes[service].poll() is None, f"{service} exited: {self.argv(service)}"
            assert time.monotonic() < deadline, f"{service} never healthy: {checked.stderr}"
            time.sleep(0.1)

    def run(self, service: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(service), cwd=ROOT, env=self.environment(service),
                              capture_output=True, text=True, timeout=60)

    def replicas(self, service: str, count: int) -> list[subprocess.CompletedProcess]:
        """`--scale SERVICE=count`: as many at once, each with its container's hostname."""
        started = [subprocess.Popen(self.argv(service), cwd=ROOT, text=True,
                                    env=self.environment(service, HOSTNAME=f"{service}-{n}"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for n in range(1, count + 1)]
        finished = []
        for process in started:
            stdout, stderr = process.communicate(timeout=60)
            finished.append(subprocess.CompletedProcess(process.args, process.returncode,
                                                        stdout, stderr))
        return finished

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def compose():
    local = LocalCompose(resolved_config(CONTEND_PASSWORD=PASSWORD))
    try:
        for service in SERVERS:
            local.start(service)
        for service in SERVERS:
            local.wait_healthy(service)
        yield local
    finally:
        local.stop()


def test_servers_start_and_pass_their_healthchecks_with_the_password(compose):
    for service in SERVERS:
        assert compose.processes[service].poll() is None
        assert compose.healthcheck(service).returncode == 0


def test_servers_refuse_clients_without_the_password(compose):
    for service in SERVERS:
        done = subprocess.run([*CONTEND, "ping", "--target", f"127.0.0.1:{compose.ports[service]}"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 1 and "NOAUTH" in done.stderr, done.stderr


@pytest.mark.parametrize("target", SERVERS)
def test_load_service_runs_against_the_target_chosen_by_environment(compose, target):
    config = resolved_config(CONTEND_PASSWORD=PASSWORD, TARGET=target, SCENARIO="incr",
                             CLIENTS="4", DURATION="0.3")
    compose.services = config["services"]
    assert compose.environment("load")["TARGET"] == f"127.0.0.1:{compose.ports[target]}"
    done = compose.run("load")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "invariant holds: no lost updates" in done.stdout


def test_scaled_bank_replicas_each_keep_their_own_invariant(compose):
    """`TARGET=trio SCENARIO=bank docker compose up --scale load=3 load`."""
    compose.services = resolved_config(CONTEND_PASSWORD=PASSWORD, TARGET="trio",
                                       SCENARIO="bank", CLIENTS="4",
                                       DURATION="1")["services"]
    for done in compose.replicas("load", 3):
        assert done.returncode == 0, done.stdout + done.stderr
        assert "invariant holds" in done.stdout, done.stdout


def test_bench_service_runs_the_comparison_on_every_server(compose):
    compose.services = resolved_config(CONTEND_PASSWORD=PASSWORD, CLIENTS="2",
                                       DURATION="0.2")["services"]
    done = compose.run("bench")
    assert done.returncode == 0, done.stdout + done.stderr
    for service in SERVERS:
        assert f"== 127.0.0.1:{compose.ports[service]}" in done.stdout
    assert done.stdout.count("invariant holds") == len(SERVERS), done.stdout


def test_localised_commands_keep_their_meaning():
    """The rewrite the tests above rely on changes addresses and ports, nothing else."""
    local = LocalCompose(resolved_config(CONTEND_PASSWORD=PASSWORD))
    threads = local.argv("threads")
    assert threads[:6] == [*CONTEND, "serve", "--model", "threads"]
    assert threads[threads.index("--port") + 1] == str(local.ports["threads"])
    assert threads[threads.index("--requirepass") + 1] == PASSWORD
    assert local.environment("bench")["CONTEND_PASSWORD"] == PASSWORD
    loop = shlex.split(local.argv("bench")[2])
    assert loop[:3] == ["for", "target", "in"]
    targets = {word.rstrip(";") for word in loop[3:loop.index("do")]}
    assert targets == {f"127.0.0.1:{port}" for port in local.ports.values()}


def test_ping_says_why_when_nobody_answers():
    """The healthcheck's own failure: exit 1 and one line naming the cause."""
    port = free_port()   # nothing listens there
    done = subprocess.run([*CONTEND, "ping", "--target", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith(f"contend ping: 127.0.0.1:{port}: ") and "refused" in done.stderr
