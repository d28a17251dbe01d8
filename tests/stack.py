"""Running Herald for tests as users run it: ``herald api`` and ``herald worker`` as separate
processes on real Postgres and Redis, and boto3 pointed at the API."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import boto3
import httpx
import psycopg
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT_KEY_ID = "HKTESTROOTKEY0000001"
ROOT_SECRET = "tR7kQ2vLm9XwZp4NfJ8sBc3HdY6gKu1Ve5Ta0Wq"
SECRET_KEY = "hV3nP8qZr2LxT6wKc9FmJ4sYb7DgA1uNe5Rt0Qi"  # HERALD_SECRET_KEY of every stack
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_database(name: str, port: int = 5432) -> str:
    with psycopg.connect(_admin(port), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"


@contextlib.contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """A fresh database of the test's own, migrated to head, dropped afterwards."""
    from worker.core.config import Settings
    from worker.core.migrate import upgrade

    name = f"herald_test_{prefix}_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    upgrade(Settings(database_url=url, secret_key=SECRET_KEY))
    try:
        yield url
    finally:
        drop_database(name)


def drop_database(name: str, port: int = 5432) -> None:
    with contextlib.suppress(psycopg.OperationalError), psycopg.connect(
        _admin(port), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(port: int) -> str:
    return PG_ADMIN.replace(":5432/", f":{port}/")


class PrivateRedis:
    """A Redis server of the test's own (nothing on disk), so it can be stopped and restarted
    empty without disturbing anything else on the machine."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False  # once started, a restart must come back on the same port

    def start(self) -> PrivateRedis:
        import redis

        for _ in range(5):
            self.process = subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while self.process.poll() is None:
                try:
                    # Ours, not another run's server that took the port between free_port()
                    # and this start (two `make test` runs on one machine).
                    info = redis.Redis(port=self.port).info("server")
                    if info["process_id"] == self.process.pid:
                        self.started = True
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.05)
            if self.started:
                raise RuntimeError(f"port {self.port} was taken while redis-server was down")
            # The port was taken after all: another one.
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        raise RuntimeError("redis-server could not bind a port")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own on a free port, so it can be restarted."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> PrivatePostgres:
        if not (self.directory / "PG_VERSION").exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            self.directory.parent.chmod(0o755)
            shutil.chown(self.directory, "postgres", "postgres")
            self._as_postgres(str(self.bin / "initdb"), "-D", str(self.directory), "-A",
                              "trust", "-U", "postgres")
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.directory), "-w", "-l",
            str(self.directory / "server.log"), "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.directory), "-m", mode,
                          "-w", "stop")


def pinpoint(endpoint_url: str, key_id: str = ROOT_KEY_ID, secret: str = ROOT_SECRET,
             region: str = "us-east-1", retries: int = 1):  # type: ignore[no-untyped-def]
    return boto3.client(
        "pinpoint",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": retries, "mode": "standard"},
                      read_timeout=120, connect_timeout=5),
    )


class Stack:
    """A database, a Redis db, one or more API processes and worker processes."""

    def __init__(self, name: str, env: Mapping[str, str] | None = None,
                 redis_url: str | None = None, pg_port: int = 5432):
        # Parallel test processes (pytest-xdist) each run their own "main" stack: its log files
        # carry the process's name.
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        self.name = f"{name}-{worker}" if worker else name
        self.database = f"herald_test_{name}_{uuid.uuid4().hex[:6]}"
        # A Redis server of the stack's own unless the test brings one: two test runs on one
        # machine (or tests in parallel) never share a broker queue or a rate-limit bucket.
        self.own_redis = None if redis_url else PrivateRedis().start()
        self.redis_url = redis_url or self.own_redis.url  # type: ignore[union-attr]
        self.pg_port = pg_port
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": create_database(self.database, pg_port),
            "HERALD_BROKER_URL": self.redis_url,
            "HERALD_REDIS_URL": self.redis_url,
            "HERALD_SECRET_KEY": SECRET_KEY,
            "HERALD_ROOT_ACCESS_KEY_ID": ROOT_KEY_ID,
            "HERALD_ROOT_SECRET_ACCESS_KEY": ROOT_SECRET,
            "HERALD_SYNC_TIMEOUT_S": "10",
            "HERALD_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.apis: list[tuple[subprocess.Popen[bytes], str]] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        ARTIFACTS.mkdir(exist_ok=True)
        self.run("migrate")

    @property
    def database_url(self) -> str:
        return self.env["HERALD_DATABASE_URL"]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "herald"), *args], env=self.env, cwd=ROOT, check=True,
            capture_output=True, text=True, timeout=120,
        )

    def _log(self, role: str) -> int:
        path = ARTIFACTS / f"{self.name}-{role}-{len(self.apis) + len(self.workers)}.log"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def start_api(self) -> str:
        for _ in range(3):
            port = free_port()
            log = self._log("api")
            process = subprocess.Popen(
                [str(VENV_BIN / "herald"), "api", "--host", "127.0.0.1", "--port", str(port)],
                env=self.env, cwd=ROOT, stdout=log, stderr=log,
            )
            os.close(log)
            url = f"http://127.0.0.1:{port}"
            # Generous: importing the API under coverage on a machine running two suites at
            # once took more than 30 s.
            deadline = time.monotonic() + 120
            while process.poll() is None:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        self.apis.append((process, url))
                        return url
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"herald api did not start; see {ARTIFACTS}")
                time.sleep(0.1)
            # Exited: most likely the port was taken after free_port() (another test run on
            # the machine); another port.
        raise RuntimeError(f"herald api did not start; see {ARTIFACTS}")

    def start_worker(self, concurrency: int = 2, extra_env: Mapping[str, str] | None = None
                     ) -> subprocess.Popen[bytes]:
        log = self._log("worker")
        process = subprocess.Popen(
            [str(VENV_BIN / "herald"), "worker", "--concurrency", str(concurrency),
             "--loglevel", self.env["HERALD_LOG_LEVEL"],
             "--hostname", f"w{len(self.workers)}-{uuid.uuid4().hex[:4]}@%h"],
            env={**self.env, **(extra_env or {})}, cwd=ROOT, stdout=log, stderr=log,
            start_new_session=True,
        )
        os.close(log)
        self.workers.append(process)
        return process

    def wait_worker_ready(self, timeout: float = 30) -> None:
        """Until a worker answers Celery's ping over the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(VENV_BIN / "celery"), "-A", "worker.delivery.tasks", "inspect", "ping",
                 "-t", "1"],
                env=self.env, cwd=ROOT, capture_output=True, text=True,
            )
            if "pong" in result.stdout:
                return
            time.sleep(0.3)
        raise RuntimeError("no worker answered ping")

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children, as an OOM killer would."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for process, _ in self.apis:
            process.terminate()
        for process in self.workers:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in [p for p, _ in self.apis] + self.workers:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_database(self.database, self.pg_port)
        if self.own_redis is not None:
            self.own_redis.stop()


class RabbitVhost:
    """A RabbitMQ virtual host of the test's own on the machine's RabbitMQ (guest/guest),
    deleted afterwards: tests never see each other's queues."""

    def __init__(self) -> None:
        self.name = f"herald-test-{uuid.uuid4().hex[:8]}"

    def url(self, port: int = 5672) -> str:
        return f"amqp://guest:guest@127.0.0.1:{port}/{self.name}"

    def create(self) -> RabbitVhost:
        _rabbitmqctl("add_vhost", self.name)
        _rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            _rabbitmqctl("delete_vhost", self.name)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
