"""AWS emulators the integration tests talk HTTP to, each in its own process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_MOTO = """
import logging, sys
logging.disable(logging.CRITICAL)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # lives until the test session closes the pipe
"""


@dataclass
class Emulator:
    process: subprocess.Popen[str]
    url: str
    kill_group: bool = False

    def stop(self) -> None:
        if self.kill_group:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
            return
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_moto() -> Emulator:
    """moto's server mode on a free loopback port, in a child process that dies with its parent."""
    process = subprocess.Popen(
        [sys.executable, "-c", _MOTO],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    if not port:
        process.kill()
        raise RuntimeError("moto server did not start")
    return Emulator(process, f"http://127.0.0.1:{port}")


MINISTACK_DEFAULT = Path(__file__).resolve().parents[2] / ".venv-ministack" / "bin" / "ministack"


def ministack_path() -> Path | None:
    """ministack lives in its own virtualenv (it pins botocore); `make test` installs it there."""
    configured = os.environ.get("SLUICEWAY_TEST_MINISTACK")
    path = Path(configured) if configured else MINISTACK_DEFAULT
    return path if path.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_listening(
    name: str,
    command: list[str],
    port: int,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Emulator:
    """Start an emulator in its own process group and wait until its port accepts connections."""
    process = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Emulator(process, f"http://127.0.0.1:{port}", kill_group=True)
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"{name} did not start on port {port}")


def start_ministack(path: Path, timeout: float = 30.0) -> Emulator:
    """ministack on a free port; a faster SQS with AWS's FIFO group semantics."""
    port = _free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "LOG_LEVEL": "WARNING"}
    return _start_listening("ministack", [str(path)], port, timeout, env)


KINESALITE_CLI = Path(__file__).resolve().parents[2] / "node_modules" / "kinesalite" / "cli.js"


def kinesalite_path() -> Path | None:
    """kinesalite (npm) reshards like Kinesis does; `make test` installs it in node_modules."""
    return KINESALITE_CLI if KINESALITE_CLI.exists() else None


def start_kinesalite(path: Path, timeout: float = 20.0) -> Emulator:
    """kinesalite on a free port, with stream state changes (create, split) taking 50 ms."""
    port = _free_port()
    delays = ["--createStreamMs", "50", "--updateStreamMs", "50", "--deleteStreamMs", "50"]
    return _start_listening("kinesalite", ["node", str(path), "--port", str(port), *delays], port, timeout)


DYNAMODB_LOCAL_JAR = (
    Path(__file__).resolve().parents[2] / ".dynamodb-local" / "package" / "emulator" / "DynamoDBLocal.jar"
)


def dynamodb_local_path() -> Path | None:
    """DynamoDB Local's jar (from the npm package amplify-dynamodb-simulator) when it and a Java
    runtime are installed; `make test` installs both."""
    configured = os.environ.get("SLUICEWAY_TEST_DYNAMODB_LOCAL")
    jar = Path(configured) if configured else DYNAMODB_LOCAL_JAR
    return jar if jar.exists() and shutil.which("java") else None


def start_dynamodb_local(jar: Path, timeout: float = 60.0) -> Emulator:
    """DynamoDB Local in memory on a free port. The JIT stops at its first tier and the
    collector is the serial one: a test's few hundred requests never pay back C2's start-up
    work, and on two cores it competes with the tests (ready in about 1.5 s instead of 2)."""
    port = _free_port()
    command = [
        "java",
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        "-inMemory",
        "-port",
        str(port),
        "-disableTelemetry",
    ]
    # it writes a metadata file into its working directory: keep that beside the jar
    return _start_listening("DynamoDB Local", command, port, timeout, cwd=jar.parent)
