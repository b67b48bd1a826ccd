"""The production storage parts as real local processes on 127.0.0.1, each stopped by its pid: PostgreSQL 15
(the machine's own binaries), an S3-compatible server (moto's `moto_server`, with IAM authentication on), and
the MLflow server on both, started the way a team starts it (`make mlflow-server`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.conftest import PROJECT, VENV_BIN, free_port, stop_process_tree, wait_for_http

POSTGRES_HINT = "install PostgreSQL 15 (Debian/Ubuntu: apt install postgresql-15; macOS: brew install postgresql@15)"
MOTO_HINT = "install the dev extra (pip install -e '.[dev]', which has moto[server])"


def require(program: str, hint: str) -> str:
    """The program's path; where it is missing the storage tier is skipped, except in CI, where it fails."""
    found = str(VENV_BIN / program) if (VENV_BIN / program).exists() else shutil.which(program)  # this venv's first
    if found is None:
        message = f"storage tier: {program} not found; {hint}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must run the storage tier)")
        pytest.skip(message)
    return found


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server with empty databases `mlflow` and `iceberg`; yields the first's URI. `initdb` refuses
    root, so as root the server runs as the `postgres` system user."""
    initdb, server = require("initdb", POSTGRES_HINT), require("postgres", POSTGRES_HINT)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="vae-postgres-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run([*as_postgres, initdb, "-D", str(root / "data"), "-U", "mlflow", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)  # fmt: skip
    log = open(root / "server.log", "w")  # noqa: SIM115 - open for the server's whole life
    command = [*as_postgres, server, "-D", str(root / "data"), "-p", str(port), "-h", "127.0.0.1", "-k", str(root)]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, 60, proc)
        _create_database(port, "mlflow")
        _create_database(port, "iceberg")  # the scores table's catalog: a database of its own on the same server
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            proc.wait(60)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _create_database(port: int, name: str) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            connection = psycopg.connect(host="127.0.0.1", port=port, user="mlflow", dbname="postgres", autocommit=True)
            break
        except psycopg.OperationalError:  # accepting connections only once recovery is done
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    with connection:
        connection.execute(f"CREATE DATABASE {name}")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)  # never printed, not even in a failing test's report
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        """The standard variables every client here reads (pyarrow, boto3, MLflow's S3 artifact store)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region}  # fmt: skip

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)  # fmt: skip

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@contextmanager
def s3_server(buckets: tuple[str, ...]) -> Iterator[S3Server]:
    """moto's S3 server with IAM authentication: after the first three requests (which create a user with an
    allow-all policy and its access key), every request must be signed with that key."""
    import boto3

    program = require("moto_server", MOTO_HINT)
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen([program, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_for_port(port, 60, proc)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap", region_name="us-east-1")  # fmt: skip
        iam.create_user(UserName="pipelines")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="pipelines", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="pipelines")["AccessKey"]
        server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
        for bucket in buckets:
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        stop_process_tree(proc)


class MlflowService:
    """`make mlflow-server` on PostgreSQL with artifacts in S3; stop() and start() again keep the same port."""

    def __init__(self, backend_uri: str, artifacts: str, s3: S3Server, log_dir: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **s3.env, "MLFLOW_BACKEND_STORE_URI": backend_uri,
                    "MLFLOW_ARTIFACTS_DESTINATION": artifacts}  # fmt: skip
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"mlflow-{self.starts}.log", "w")  # noqa: SIM115 - the server's whole life
        command = ["make", "-s", "mlflow-server", f"MLFLOW_PORT={self.port}"]
        self.proc = subprocess.Popen(command, cwd=PROJECT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip
        wait_for_http(f"{self.uri}/health", timeout=180, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_tree(self.proc)
            self.proc = None
