"""deploy/local/process.py: the one way the dev stack, the harnesses and the benchmarks start,
wait for and stop their child processes."""
from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from deploy.local.process import Process, ProcessError, free_port, pid_alive, port_open, terminate_pid


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_ready_when_the_port_answers_and_terminate_returns_the_exit_code(tmp_path):
    port = free_port()
    p = Process("listener", py(f"import socket, time\ns = socket.create_server(('127.0.0.1', {port}))\n"
                               "print('listening', flush=True)\ntime.sleep(60)"), tmp_path / "l.log").start()
    p.wait_port(port, timeout_s=10)
    assert p.running() and port_open(port)
    assert p.terminate(5) == -15 and not p.running()
    assert "listening" in p.log_tail()


def test_exit_before_ready_is_an_error_with_the_log_tail(tmp_path):
    class BrokerError(RuntimeError):
        pass
    p = Process("broker", py("import sys; print('bad config line 3'); sys.exit(3)"), tmp_path / "b.log",
                error=BrokerError).start()
    with pytest.raises(BrokerError, match=r"(?s)broker exited \(rc=3\) while waiting for .*bad config line 3"):
        p.wait_port(free_port(), timeout_s=10)


def test_timeout_names_what_it_waited_for(tmp_path):
    p = Process("sleeper", py("import time; time.sleep(60)"), tmp_path / "s.log").start()
    try:
        t0 = time.monotonic()
        with pytest.raises(ProcessError, match="timed out after 0.3s waiting for the moon"):
            p.wait_for(lambda: False, "the moon", 0.3)
        assert time.monotonic() - t0 < 5
    finally:
        p.kill()


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    p = Process("stubborn", py("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                               "print('ready', flush=True)\ntime.sleep(60)"), tmp_path / "x.log").start()
    p.wait_for(lambda: "ready" in p.log_tail(), "ready", 10)
    with pytest.raises(ProcessError, match="did not stop within 0.5s"):
        p.terminate(0.5, strict=True)
    assert p.returncode == -9 and not p.running()
    assert p.terminate(1) == -9   # again: nothing to do, the same exit code


def test_kill_group_takes_the_children_too(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = (f"import subprocess, sys, time\nc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(c.pid))\ntime.sleep(60)")
    p = Process("driver", py(code), tmp_path / "d.log", kill_group=True).start()
    p.wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", "the child", 10)
    child = int(pid_file.read_text())
    p.kill()
    deadline = time.monotonic() + 5
    while pid_alive(child, "time.sleep") and time.monotonic() < deadline:
        time.sleep(0.05)   # the child is init's now; it goes once the SIGKILL lands
    assert not pid_alive(child, "time.sleep")


def test_a_detached_process_is_stopped_by_pid_only_when_its_command_line_matches(tmp_path):
    p = Process("daemon", py("import time; time.sleep(60)  # smartcity-test-daemon"), tmp_path / "d.log").start()
    # /proc/PID/cmdline reads empty for a moment while the child execs
    p.wait_for(lambda: pid_alive(p.pid, "smartcity-test-daemon"), "its command line", 5, step=0.01)
    pid = p.detach()
    assert not p.running() and p.pid is None
    try:
        assert not terminate_pid(pid, "something-else")      # a reused pid is left alone
        assert pid_alive(pid, "smartcity-test-daemon")
        assert terminate_pid(pid, "smartcity-test-daemon", timeout_s=5)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)   # still our child here: reap it
        except ChildProcessError:
            pass


def test_free_port_is_free():
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        assert port_open(port)
    assert not port_open(port)
