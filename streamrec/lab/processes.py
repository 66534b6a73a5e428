"""Starting streamrec's workers as separate OS processes (demo, end-to-end tests, chaos runs).

Each service is ``python -m streamrec <command>`` with the caller's settings passed as ``STREAMREC_*``
environment variables, its output in a log file, and a clean SIGTERM → SIGKILL stop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from streamrec.settings import Settings

STOP_TIMEOUT_S = 20.0


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build exactly these settings."""
    env = dict(os.environ) | settings.to_env()
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (Linux ``/proc``; None where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU cores each named process used between :meth:`start` and :meth:`cores` (where the machine's time went)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._start: dict[str, float | None] = {}
        self._t0 = 0.0

    def start(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._t0 = time.perf_counter()
        return self

    def cores(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self._start.get(name)
            if now is not None and then is not None:
                out[name] = (now - then) / wall
        return out


class Service:
    """One streamrec worker process: ``python -m streamrec <command>`` (or ``program`` + command)."""

    def __init__(
        self, name: str, command: list[str], settings: Settings, log_dir: Path, program: Sequence[str] | None = None
    ) -> None:
        self.name = name
        self.command = command
        self.settings = settings
        self.program = list(program) if program is not None else [sys.executable, "-m", "streamrec"]
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.process = subprocess.Popen(
            [*self.program, *self.command],
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, for resilience tests."""
        if self.process is not None and self.alive:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code."""
        if self.process is None:
            return None
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


async def worker_stats(settings: Settings, timeout: float = 2.0) -> dict[str, float] | None:
    """The worker's ``/stats`` page, or None while it is not up yet."""
    url = f"http://{settings.web.web_host}:{settings.web.web_port}/stats"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as resp,
        ):
            if resp.status != 200:
                return None
            return await resp.json()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def wait_for_services(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, services: Sequence[Service], poll_s: float = 0.25
) -> Any:
    """Await ``check()`` until it returns something truthy (returned); fail fast if a service process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        for s in services:
            if not s.alive:
                raise RuntimeError(f"{s.name} exited while waiting for {what}:\n{s.tail()}")
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
