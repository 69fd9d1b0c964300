"""systemd's service notification protocol (sd_notify(3)) for Type=notify and WatchdogSec=.

Under systemd with Type=notify the service manager puts the path of an AF_UNIX datagram socket in
$NOTIFY_SOCKET (a leading "@" means the abstract namespace); each notification is one datagram of
newline-separated KEY=VALUE lines: READY=1 once the service is up, WATCHDOG=1 at least once per
watchdog interval ($WATCHDOG_USEC, meant for the process $WATCHDOG_PID when that is set), STOPPING=1
when shutting down, STATUS=text for `systemctl status`. Without $NOTIFY_SOCKET (run by hand, under
another supervisor, in CI) every call is a no-op, so the agent never depends on systemd.

The protocol is small and documented as stable for reimplementation, so it lives here instead of in
a dependency: `sdnotify` on PyPI is pure Python but unmaintained since 2017 and knows nothing of the
watchdog interval or $WATCHDOG_PID; `systemd-python` needs libsystemd headers and a compiler on the
Pi. Sending never raises: a manager that went away must not take the agent down with it.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Mapping, MutableMapping

log = logging.getLogger("smartcity.edge.sdnotify")

ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str | None) -> str | None:
    """The socket address $NOTIFY_SOCKET names, or None for one this module cannot use."""
    if not value:
        return None
    if value.startswith("@"):            # abstract namespace
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd >= 254 may also hand out vsock:CID:PORT (VMs); nothing on a Pi does.
    log.warning("NOTIFY_SOCKET is not an AF_UNIX path; systemd notifications are off",
                extra={"notify_socket": value})
    return None


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds systemd expects this process to honour, or None.

    As sd_watchdog_enabled(3): $WATCHDOG_USEC must be a positive integer, and when $WATCHDOG_PID is
    set it must be this process (the variables leaked into a child are not for the child)."""
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    wd_pid = env.get("WATCHDOG_PID")
    if wd_pid:
        try:
            if int(wd_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return value / 1_000_000


class Notifier:
    """Sends notifications to the service manager; a no-op when there is none."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET"))
        self.watchdog_s = watchdog_interval_s(env) if self.address else None
        self._sock: socket.socket | None = None
        self._failed = False
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> "Notifier":
        """Read the variables and remove them from the environment, as sd_notify's
        unset_environment does, so that no child process (Blinka's pulsein helper) inherits
        them and talks to the manager on the agent's behalf."""
        environ = os.environ if environ is None else environ
        n = cls(dict(environ))
        for key in ENV_KEYS:
            environ.pop(key, None)
        return n

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: object) -> bool:
        """Send one datagram: notify(READY=1, STATUS="...") -> b"READY=1\\nSTATUS=...".
        True when it was sent; False (never an exception) otherwise."""
        if self._sock is None:
            return False
        lines = []
        for key, value in fields.items():
            text = str(value).replace("\n", " ")   # one value per line
            lines.append(f"{key}={text}")
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as e:
            if not self._failed:   # once: a watchdog ping every few seconds must not flood the log
                log.warning("cannot notify the service manager", extra={"error": str(e)})
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
