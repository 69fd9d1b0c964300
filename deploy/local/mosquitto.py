"""A Mosquitto broker run by the project on loopback: for tests, benchmarks and the local stack.

    with MosquittoServer(tmp_path / "mqtt") as broker:
        client.connect(broker.host, broker.port)

Why the queue limits are raised: Mosquitto 2.0 defaults to max_queued_messages 1000 per client
(and max_inflight_messages 20). When a persistent subscriber (the MQTT->Kafka bridge) is away,
the broker queues its QoS 1 messages and, past 1000, DROPS the newest ones silently (only a
"Outgoing messages are being dropped" log line). An edge device replaying an hour of backlog
would lose most of it. We set max_queued_messages 0 (no count limit) and bound the queue by
bytes instead (max_queued_bytes, default 1 GiB per client) so a runaway client cannot exhaust
memory but an ordinary outage loses nothing. max_inflight_messages is raised so the in-flight
window is not the throughput bottleneck; Mosquitto also advertises it to MQTT v5 clients as
the CONNACK receive-maximum, which the edge publisher honours.

max_packet_size (MAX_PACKET_BYTES, 512 KiB): Mosquitto's default is 256 MiB, so one client could
hand the bridge a message no Kafka record can hold. 512 KiB is twice the bridge's max_payload_bytes
(256 KiB), so a payload at the bridge's limit still fits with its topic and user properties (the
bridge dead-letters it as too_large above that, bounded user properties as headers_too_large), and
anything the broker accepts fits whole in one Kafka record (the producer's message.max.bytes is
1,000,000, the broker's 1,048,588), so even its dead-letter copy is not cut. A bigger packet is
refused by the broker (the client is disconnected, and the reason logged).

Durability: Mosquitto writes its in-memory state (sessions, queued messages, retained messages)
to persistence_location on clean shutdown (SIGTERM, see stop()) and every autosave_interval
seconds. A SIGKILL (kill()) loses what arrived since the last autosave: that is a property of
the broker, the tests use it deliberately.

TLS (TlsFiles, certificates from make_ca/issue_cert): either the one listener speaks TLS, or, with
tls_port, a second listener does beside the plain one. Authentication is global
(per_listener_settings false): one password file and one ACL for both; with
use_identity_as_username the TLS listener takes the client certificate's CN as the username and
asks no password, so the ACL's %u works for certificates too. Seen with 2.0.11: a publish the ACL
denies gets PUBACK 0x87 and then the client is disconnected, on either listener.

CLI: python -m deploy.local.mosquitto --dir DIR [--port N]   (runs in the foreground)
"""
from __future__ import annotations

import argparse
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .process import Process, Service, free_port

log = logging.getLogger(__name__)

ONE_GIB = 1 << 30
MAX_PACKET_BYTES = 512 * 1024


class MosquittoError(RuntimeError):
    pass


def find_binary(name: str = "mosquitto") -> str:
    # Debian puts the broker in /usr/sbin, often not on a non-root PATH.
    for cand in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}", shutil.which(name)):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise MosquittoError(f"{name} not found; install it with deploy/setup.d/10-apt.sh (apt-get install mosquitto)")


@dataclass(frozen=True)
class TlsFiles:
    """Server side TLS. require_certificate=True makes clients present a cert signed by cafile;
    use_identity_as_username=True makes the certificate's CN the client's MQTT username (no
    password asked; the ACL's %u is the CN)."""
    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False
    use_identity_as_username: bool = False


def _openssl(cwd: Path, *args: str) -> str:
    openssl = shutil.which("openssl")
    if not openssl:
        raise MosquittoError("openssl not found (apt-get install openssl)")
    r = subprocess.run([openssl, *args], capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise MosquittoError(f"openssl {args[0]} failed: {r.stderr.strip()}")
    return r.stdout


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_LEAF_EXT = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
             "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")


def _private_file(path: Path) -> None:
    """Create path empty with mode 0600 before openssl writes a key into it (openssl would create
    it with the umask's mode and the key would be readable by others for a moment)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def make_ca(out_dir: str | os.PathLike, cn: str = "smartcity-test-ca", days: int = 2) -> dict[str, Path]:
    """A self-signed EC CA in out_dir: ca.crt and ca.key (mode 0600, unencrypted)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _private_file(out / "ca.key")
    _openssl(out, "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
             "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(out / "ca.key", 0o600)
    return {"ca": out / "ca.crt", "ca_key": out / "ca.key"}


def issue_cert(ca_dir: str | os.PathLike, name: str, out_dir: str | os.PathLike | None = None,
               days: int = 2, server: bool = False) -> tuple[Path, Path]:
    """A certificate with CN=name signed by the CA in ca_dir (make_ca): a server certificate for
    127.0.0.1/localhost, or a client certificate (CN = the MQTT username under
    use_identity_as_username). Writes {name}.crt and {name}.key (mode 0600, unencrypted) to
    out_dir (default ca_dir); returns their paths."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(f"certificate name {name!r}: letters, digits, '_', '-', '.' (not first); 64 at most")
    ca = Path(ca_dir).resolve()
    out = Path(out_dir).resolve() if out_dir else ca
    out.mkdir(parents=True, exist_ok=True)
    key, crt, csr, ext = (out / f"{name}{sfx}" for sfx in (".key", ".crt", ".csr", ".ext"))
    ext.write_text(_LEAF_EXT + ("extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                if server else "extendedKeyUsage=clientAuth\n"))
    _private_file(key)
    _openssl(out, "req", *_EC, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    os.chmod(key, 0o600)
    _openssl(out, "x509", "-req", "-in", str(csr), "-CA", str(ca / "ca.crt"), "-CAkey", str(ca / "ca.key"),
             "-CAcreateserial", "-CAserial", str(ca / "ca.srl"), "-out", str(crt), "-days", str(days),
             "-extfile", str(ext))
    csr.unlink()
    ext.unlink()
    return crt, key


def cert_valid(cert: str | os.PathLike, ca: str | os.PathLike, for_s: int = 0) -> bool:
    """True when cert (PEM) is signed by ca and both are still valid `for_s` seconds from now;
    False when either is missing or unreadable."""
    openssl = shutil.which("openssl")
    if not openssl or not Path(cert).is_file() or not Path(ca).is_file():
        return False
    r = subprocess.run([openssl, "verify", "-CAfile", str(ca), "-attime", str(int(time.time()) + for_s),
                        str(cert)], capture_output=True, text=True)
    return r.returncode == 0


def make_test_pki(out_dir: str | os.PathLike, client_names: tuple[str, ...] = ("client",),
                  days: int = 2) -> dict[str, Path]:
    """A throwaway CA, a server cert for 127.0.0.1/localhost and one client cert per name
    (CN = name), with openssl. Test use only: keys are unencrypted. Returns paths:
    ca, server_cert, server_key, and {name}_cert / {name}_key per client."""
    out = Path(out_dir)
    paths = {"ca": make_ca(out, days=days)["ca"]}
    paths["server_cert"], paths["server_key"] = issue_cert(out, "server", days=days, server=True)
    for name in client_names:
        paths[f"{name}_cert"], paths[f"{name}_key"] = issue_cert(out, name, days=days)
    return paths


class MosquittoServer(Service):
    """stop(): a clean shutdown, mosquitto writes its persistence file (MosquittoError when it had
    to be killed); kill(): a crash, nothing persisted beyond the last autosave."""
    stop_timeout_s = 10.0
    strict_stop = True

    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, host: str = "127.0.0.1",
                 persistence: bool = True, passwords: dict[str, str] | None = None,
                 acl: str | None = None, max_queued_messages: int = 0,
                 max_queued_bytes: int = ONE_GIB, max_inflight_messages: int = 1000,
                 max_packet_size: int = MAX_PACKET_BYTES,
                 autosave_interval_s: int = 1, tls: TlsFiles | None = None,
                 tls_port: int | None = None, extra_conf: str = "", verbose: bool = False):
        """tls without tls_port: the one listener (port) speaks TLS. tls with tls_port: port stays
        a plain (password) listener and a second listener on tls_port (0: a free port) speaks TLS;
        both share the password file and the ACL (per_listener_settings false)."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"MosquittoServer listens on loopback only, not {host!r}")
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.persistence = persistence
        self.passwords = dict(passwords) if passwords else None
        self.acl = acl
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self.max_inflight_messages = max_inflight_messages
        self.max_packet_size = max_packet_size
        self.autosave_interval_s = autosave_interval_s
        self.tls = tls
        if tls_port is not None and tls is None:
            raise ValueError("tls_port without tls")
        self.tls_port = (tls_port or free_port(host)) if tls_port is not None else None
        self.extra_conf = extra_conf
        self.verbose = verbose
        self.binary = find_binary("mosquitto")
        self.proc: Process | None = None

    # paths -----------------------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "mosquitto.db"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls and self.tls_port is None else 'mqtt'}://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str | None:
        if self.tls is None:
            return None
        return f"mqtts://{self.host}:{self.tls_port or self.port}"

    # config ----------------------------------------------------------------------------------
    def render_conf(self) -> str:
        lines = [
            "# generated by deploy/local/mosquitto.py; see its docstring for the why of each limit",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root, mosquitto would drop to 'mosquitto'
            # Authentication (password_file, acl_file, allow_anonymous) is global: the same users and
            # ACL on every listener. A certificate listener with use_identity_as_username takes
            # the CN as the username and asks no password; the ACL's %u is the CN there.
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.passwords is not None else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.data_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval_s}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_inflight_messages {self.max_inflight_messages}",
            f"max_packet_size {self.max_packet_size}",
            # MQTT v3 clients' sessions otherwise never expire; v5 clients set their own expiry.
            "persistent_client_expiration 7d",
            "set_tcp_nodelay true",
            f"log_dest file {self.log_path}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        lines += [f"log_type {t}" for t in (
            ("all",) if self.verbose else ("error", "warning", "notice", "information"))]
        if self.passwords is not None:
            lines.append(f"password_file {self.data_dir / 'passwords'}")
        if self.acl is not None:
            lines.append(f"acl_file {self.data_dir / 'acl'}")
        if self.extra_conf:
            lines.append(self.extra_conf)
        if self.tls:
            # Listener options apply to the listener declared last: the TLS one goes at the end.
            if self.tls_port is not None:
                lines.append(f"listener {self.tls_port} {self.host}")
            else:
                lines.append(f"# TLS on the listener {self.port} above")
            lines += [f"cafile {self.tls.cafile}", f"certfile {self.tls.certfile}",
                      f"keyfile {self.tls.keyfile}",
                      f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
                      f"use_identity_as_username {'true' if self.tls.use_identity_as_username else 'false'}"]
        return "\n".join(lines) + "\n"

    def _write_files(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render_conf())
        if self.passwords is not None:
            pw = self.data_dir / "passwords"
            pw.write_text("")
            pw.chmod(0o600)
            tool = find_binary("mosquitto_passwd")
            for user, password in self.passwords.items():
                # -b puts the password on the command line: acceptable for a loopback test broker.
                r = subprocess.run([tool, "-b", str(pw), user, password], capture_output=True, text=True)
                if r.returncode != 0:
                    raise MosquittoError(f"mosquitto_passwd failed for user {user!r}: {r.stderr.strip()}")
        if self.acl is not None:
            (self.data_dir / "acl").write_text(self.acl.rstrip("\n") + "\n")

    # lifecycle -------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> "MosquittoServer":
        if self.running():
            return self
        self._write_files()
        # stdout/stderr also go to the log: startup errors are printed before log_dest is opened.
        self.proc = Process("mosquitto", [self.binary, "-c", str(self.conf_path)], self.log_path,
                            error=MosquittoError).start()
        self.wait_ready(timeout_s)
        log.info("mosquitto started", extra={"port": self.port, "pid": self.proc.pid})
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            raise MosquittoError("mosquitto is not started")
        try:
            self.proc.wait_port(self.port, *((self.tls_port,) if self.tls_port else ()), host=self.host,
                                timeout_s=timeout_s)
        except MosquittoError:
            self.kill()
            raise

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged (a hung broker)."""
        if self.running():
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGCONT)

    def restart(self, timeout_s: float = 10.0) -> "MosquittoServer":
        self.stop()
        return self.start(timeout_s)

    def __del__(self):  # a forgotten broker must not outlive the test run
        try:
            self.kill()
        except Exception:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.local.mosquitto",
                                 description="Run a project Mosquitto on loopback in the foreground.")
    ap.add_argument("--dir", required=True, help="data dir (config, log, persistence)")
    ap.add_argument("--port", type=int, default=None, help="default: a free port")
    ap.add_argument("--no-persistence", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    srv = MosquittoServer(a.dir, port=a.port, persistence=not a.no_persistence, verbose=a.verbose)
    srv.start()
    print(f"mosquitto on {srv.url} (dir {srv.data_dir}, log {srv.log_path}); Ctrl-C stops", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while srv.running() and not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
