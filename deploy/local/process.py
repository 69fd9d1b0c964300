"""Child processes of the dev stack, the test harnesses and the benchmarks: one way to start,
wait for, stop and kill them.

    p = Process("mosquitto", [binary, "-c", conf], data_dir / "mosquitto.log").start()
    p.wait_port(1883, timeout_s=10)          # or p.wait_for(predicate, "what it waits for", 10)
    p.terminate(10)                          # SIGTERM, SIGKILL after 10 s; returns the exit code

- Output (stdout and stderr) is appended to one log file; an error says why and ends with the
  last lines of that log.
- `new_session` (the default): a Ctrl-C to the parent (a test run) does not reach the child, so a
  broker is not killed mid-write. `kill_group`: kill() takes the child's whole process group (the
  lake driver and its JVM, a Spark worker and its executors); the stop signal goes to the child
  alone, which stops its own children in order.
- terminate() sends SIGCONT after the stop signal: a paused (SIGSTOP) process acts on SIGTERM only
  once it runs again.
- A Process reads like a subprocess.Popen where callers need it (pid, poll(), wait(),
  send_signal(), returncode) and can be started again after it stopped.

pid_alive()/terminate_pid() do the same for a process started by an earlier command, known only
by its pid (the local stack's `down`): they check its command line first, since pids get reused.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

log = logging.getLogger(__name__)


class ProcessError(RuntimeError):
    pass


def _ephemeral_ports() -> range:
    """The range the kernel takes source ports of outgoing connections from (Linux default)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_handed_out: set[int] = set()
_rng = random.Random()  # its own: tests seed the module-level generator


def free_port(host: str = "127.0.0.1") -> int:
    """A port no one listens on now, for a child process to bind.

    Not port 0's answer: the kernel hands that out from the ephemeral range, the same range it
    takes every outgoing connection's source port from, so in a busy test run a client (a Kafka
    consumer, an HTTP probe) could take it before the child binds (seen: EADDRINUSE in CI). A
    random port below that range is taken only by another listener, which the bind test sees."""
    ephemeral = _ephemeral_ports()
    low = 20000 if ephemeral.start > 21000 else 1024
    for _ in range(200):
        port = _rng.randrange(low, ephemeral.start) if ephemeral.start > low else 0
        if port in _handed_out:  # two calls before either child binds must not get one port
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            port = s.getsockname()[1]
        _handed_out.add(port)
        return port
    raise ProcessError(f"no free port on {host} below {ephemeral.start}")


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when an HTTP server answers at `url`, whatever the status (a 403 or 404 is an answer)."""
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(url, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def log_tail(path: str | os.PathLike, n: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


class Process:
    def __init__(self, name: str, cmd: Sequence[str], log_path: str | os.PathLike, *,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                 new_session: bool = True, kill_group: bool = False,
                 error: type[Exception] = ProcessError):
        """env: added to this process's environment. error: the exception type raised (a
        service's own, e.g. MosquittoError)."""
        self.name, self.cmd, self.log_path = name, list(cmd), Path(log_path)
        self.env, self.cwd = dict(env or {}), cwd
        self.new_session = new_session or kill_group   # a group of its own to kill
        self.kill_group = kill_group
        self.error = error
        self.popen: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"Process({self.name}, pid={self.pid}, running={self.running()})"

    # start ------------------------------------------------------------------------------------
    def start(self) -> "Process":
        if self.running():
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:   # the child keeps its own descriptor
            self.popen = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, cwd=self.cwd,
                                          env={**os.environ, **self.env},
                                          start_new_session=self.new_session)
        return self

    # state ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen else None

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.log_path, n)

    def _exited_text(self, what: str) -> str:
        return (f"{self.name} exited (rc={self.returncode}) while waiting for {what}; "
                f"{self._tail_text()}")

    def _tail_text(self) -> str:
        return f"last lines of {self.name}'s log ({self.log_path}):\n{self.log_tail()}"

    # readiness ----------------------------------------------------------------------------------
    def wait_for(self, ready: Callable[[], bool], what: str, timeout_s: float, step: float = 0.1) -> None:
        """Until ready() holds; self.error when the process exits first or timeout_s passes."""
        wait_ready(ready, what, timeout_s, self, step=step)

    def wait_port(self, *ports: int, host: str = "127.0.0.1", timeout_s: float = 10.0) -> None:
        self.wait_for(lambda: all(port_open(p, host) for p in ports),
                      f"connections on {host}:{','.join(map(str, ports))}", timeout_s, step=0.05)

    # stop ---------------------------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        if self.running():
            self.popen.send_signal(sig)

    def terminate(self, timeout_s: float = 30.0, sig: int = signal.SIGTERM, strict: bool = False) -> int | None:
        """Stop signal, then SIGKILL after timeout_s; the exit code (-9 when killed), None when
        never started. strict: raise self.error when it had to be killed."""
        if self.popen is None:
            return None
        if self.running():
            self.send_signal(sig)
            self.send_signal(signal.SIGCONT)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("process did not stop in time; killing",
                            extra={"child": self.name, "pid": self.pid, "timeout_s": timeout_s})
                self.kill()
                if strict:
                    raise self.error(f"{self.name} did not stop within {timeout_s:g}s (killed); "
                                     f"{self._tail_text()}") from None
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL (works on a paused process too; kill_group: to its whole group) and reap it."""
        if self.running():
            try:
                if self.kill_group:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                else:
                    self.popen.kill()
            except ProcessLookupError:
                pass
            self.popen.wait(10)

    def detach(self) -> int | None:
        """Forget the child and leave it running (stopped later by pid: terminate_pid)."""
        pid, self.popen = self.pid, None
        return pid


class Service:
    """A server of the dev stack that runs as one Process, `self.proc` while started (Mosquitto,
    Kafka, the S3 store): running, stop, kill, detach, its log and the with-statement, the same for
    each. A subclass sets log_path and start(), and stop_timeout_s / strict_stop if it must."""
    proc: Process | None = None
    stop_timeout_s = 30.0
    strict_stop = False        # stop() raises when the server had to be killed

    def start(self) -> "Service":
        raise NotImplementedError

    def running(self) -> bool:
        return self.proc is not None and self.proc.running()

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM (a clean shutdown: the servers write their state), SIGKILL after the timeout."""
        try:
            if self.proc is not None:
                self.proc.terminate(timeout_s or self.stop_timeout_s, strict=self.strict_stop)
        finally:
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash (works on a paused server too)."""
        if self.proc is not None:
            self.proc.kill()
        self.proc = None

    def detach(self) -> int | None:
        """Leave the server running after this object is gone (the local stack stops it by pid)."""
        pid = self.proc.detach() if self.proc else None
        self.proc = None
        return pid

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.log_path, n)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_ready(ready: Callable[[], bool], what: str, timeout_s: float, *procs: Process,
               step: float = 0.1) -> None:
    """Until ready() holds, while every one of procs runs: one of them exiting, or timeout_s
    passing, raises the first one's error type with the logs' last lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        for p in procs:
            if p.popen is None or p.poll() is not None:
                raise p.error(p._exited_text(what))
        if ready():
            return
        if time.monotonic() >= deadline:
            raise procs[0].error(f"timed out after {timeout_s:g}s waiting for {what}; "
                                 + "\n".join(p._tail_text() for p in procs))
        time.sleep(step)


def pid_alive(pid: int | None, expect: str) -> bool:
    """True when pid runs and its command line contains `expect` (pids get reused)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return expect in cmdline


def terminate_pid(pid: int, expect: str, timeout_s: float = 30.0) -> bool:
    """SIGTERM to a process we did not start in this run, SIGKILL after timeout_s; False when it
    was not running (or pid is now another program's)."""
    if not pid_alive(pid, expect):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid, expect):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True
