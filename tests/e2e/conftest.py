"""Real `mes` processes for the end-to-end tests: started in a session of their own, their
output kept in files, every wait bounded, and every process ended when its test is done."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

MES = Path(sys.executable).parent / "mes"
SECRET = "e2e-test-secret-key-0123456789"
START_TIMEOUT = 45.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mes_env(**settings: str | None) -> dict[str, str]:
    """The environment without any MES_* of the caller's, plus `settings` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MES_")}
    env.update({k: v for k, v in settings.items() if v is not None})
    return env


class MesProcess:
    """One `mes` command running in the background (`mes serve`, `mes demo`)."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, port: int) -> None:
        self.args, self.port = args, port
        self.base_url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self._stdout_path, self._stderr_path = workdir / "stdout.log", workdir / "stderr.log"
        self._files: list[IO[bytes]] = [self._stdout_path.open("wb"), self._stderr_path.open("wb")]
        # A session of its own: uvicorn's worker processes can be reached through its group.
        self.process = subprocess.Popen(
            [str(MES), *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
            start_new_session=True,
        )

    @property
    def stdout(self) -> str:
        return self._stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"`mes {' '.join(self.args)}` (exit status {self.process.poll()})\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-5000:]}"
        )

    def wait_for(self, path: str = "/healthz", timeout: float = START_TIMEOUT) -> httpx.Response:
        """Polls `path` until it answers 200; fails with the process's output otherwise."""
        deadline = time.monotonic() + timeout
        last: object = None
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"the process ended before {path} answered: {self.describe()}")
                try:
                    response = client.get(path)
                except httpx.TransportError as error:
                    last = error
                else:
                    if response.status_code == 200:
                        return response
                    last = f"{response.status_code} {response.text}"
                time.sleep(0.1)
        pytest.fail(
            f"{path} did not answer 200 within {timeout} s (last: {last}): {self.describe()}"
        )

    def wait_for_log(
        self, pattern: str, count: int = 1, timeout: float = START_TIMEOUT
    ) -> set[str]:
        """Waits until stderr holds `count` distinct matches of `pattern`; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = set(re.findall(pattern, self.stderr))
            if len(found) >= count:
                return found
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(
                    f"{count} × {pattern!r} not logged within {timeout} s: {self.describe()}"
                )
            time.sleep(0.1)

    def send(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """The exit status, once the process has ended; fails (and kills it) after `timeout`."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the process did not end within {timeout} s: {self.describe()}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        self.send(signum)
        return self.wait(timeout)

    def group_alive(self) -> bool:
        """Whether any process of its session (uvicorn's workers, say) is still there."""
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def group_ends(self, timeout: float = 5.0) -> bool:
        """Whether every process of its session is gone within `timeout` (stragglers such as
        multiprocessing's resource tracker leave a moment after their parent)."""
        deadline = time.monotonic() + timeout
        while self.group_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def kill(self) -> None:
        """Ends the process and whatever it started, at once; closes the log files."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)
        for file in self._files:
            file.close()


class Launcher:
    """Starts `mes` processes and ends any that a test left running."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[MesProcess] = []

    def start(self, command: str, *args: str, env: dict[str, str], name: str) -> MesProcess:
        port = free_port()
        process = MesProcess([command, *args, "--port", str(port)], env, self.root / name, port)
        self.processes.append(process)
        return process

    free_port = staticmethod(free_port)
    env = staticmethod(mes_env)

    def run(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Runs a `mes` command to its end (bounded); fails with its output if it fails."""
        done = subprocess.run(
            [str(MES), *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"`mes {' '.join(args)}` failed: {done.stderr}"
        return done

    def end_all(self) -> None:
        for process in self.processes:
            process.send(signal.SIGTERM)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.process.wait(timeout=STOP_TIMEOUT)
            process.kill()
        self.processes.clear()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    if not MES.exists():
        pytest.fail(f"{MES} is not installed: pip install -e .")
    launch = Launcher(tmp_path_factory.mktemp("mes-processes"))
    try:
        yield launch
    finally:
        launch.end_all()


@pytest.fixture(scope="module")
def secret() -> str:
    return SECRET
