"""A Spark standalone cluster (one Master, one Worker) run by the project on loopback.

    with SparkCluster(tmp_path / "spark") as cluster:
        spark-submit --master cluster.master_url ...       # spark://127.0.0.1:<port>

Both daemons are started with pyspark's own `bin/spark-class` (the pip wheel ships the whole
runtime: jars, launcher, scripts), so there is no Spark distribution to install and the cluster is
exactly the Spark version the job is built against:

    spark-class org.apache.spark.deploy.master.Master --host 127.0.0.1 --port P --webui-port W
    spark-class org.apache.spark.deploy.worker.Worker spark://127.0.0.1:P --host 127.0.0.1 \
        --cores N --memory M --work-dir DIR --webui-port W2

Everything binds to 127.0.0.1: --host for the RPC endpoints, SPARK_LOCAL_IP for the web UIs (they
bind 0.0.0.0 otherwise) and for the executors the Worker launches; the master's REST submission
server (port 6066 by default) is off. Ready = the Master's web UI
(`/json/`) lists the Worker as ALIVE with its cores. Logs: master.log, worker.log in the given
folder; each executor's stdout/stderr under work/<app-id>/<executor-id>/.

CLI: python -m deploy.local.spark_cluster --dir DIR [--port N] [--cores N] [--memory 1g]  (foreground)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

from .kafka import find_java
from .process import Process, free_port, log_tail, port_open, wait_ready

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# The daemons only schedule; executors get their own heap (spark.executor.memory). Serial GC and
# C1 only: start-up time and the two shared cores matter more than daemon throughput.
DAEMON_MEMORY = "256m"
DAEMON_JAVA_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Djava.awt.headless=true")
# The master's REST submission server is on by default in Spark 4 on a fixed port (6066): nothing
# here submits through it, and two clusters on one host would collide on it.
MASTER_OPTS = ("-Dspark.master.rest.enabled=false",)


class SparkClusterError(RuntimeError):
    pass


def spark_home() -> Path:
    """pyspark's own installation: bin/spark-class, bin/spark-submit and jars/ of the wheel."""
    try:
        import pyspark
    except ImportError as e:
        raise SparkClusterError("pyspark is not installed in this environment") from e
    home = Path(pyspark.__file__).resolve().parent
    if not os.access(home / "bin" / "spark-class", os.X_OK):
        raise SparkClusterError(f"{home / 'bin' / 'spark-class'} missing or not executable")
    return home


def spark_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for spark-class / spark-submit: pyspark's SPARK_HOME, Java 17+, loopback only."""
    java = Path(find_java()).resolve()
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "JAVA_HOME": str(java.parents[1]),
           "SPARK_LOCAL_IP": "127.0.0.1"}
    env.update(extra or {})
    return env


class SparkCluster:
    def __init__(self, data_dir: str | os.PathLike, port: int | None = None, webui_port: int | None = None,
                 worker_webui_port: int | None = None, cores: int = 2, memory: str = "1g",
                 host: str = "127.0.0.1", start_timeout_s: float = 60.0):
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"SparkCluster listens on loopback only, not {host!r}")
        self.data_dir = Path(data_dir).resolve()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.webui_port = webui_port or free_port()
        self.worker_webui_port = worker_webui_port or free_port()
        if len({self.port, self.webui_port, self.worker_webui_port}) != 3:
            raise ValueError("port, webui_port and worker_webui_port must differ")
        self.cores = cores
        self.memory = memory
        self.start_timeout_s = start_timeout_s
        self.master: Process | None = None
        self.worker: Process | None = None
        self.last_start_s: float | None = None

    def __repr__(self) -> str:
        return f"SparkCluster({self.master_url}, ui={self.webui_url}, cores={self.cores}, memory={self.memory})"

    # paths -----------------------------------------------------------------------------------
    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    def log_path(self, which: str) -> Path:
        return self.data_dir / f"{which}.log"

    # lifecycle -------------------------------------------------------------------------------
    def _spawn(self, which: str, args: list[str]) -> Process:
        env = spark_env({"SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
                         "SPARK_DAEMON_JAVA_OPTS": " ".join(DAEMON_JAVA_OPTS),
                         "SPARK_MASTER_OPTS": " ".join(MASTER_OPTS),
                         "SPARK_LOG_DIR": str(self.data_dir), "SPARK_WORKER_DIR": str(self.work_dir)})
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        # Own session: a Ctrl-C to the test runner must not kill the daemons mid-way. spark-class
        # execs java: SIGTERM goes to the daemon (a worker stops its executors), a kill to the group.
        return Process(f"spark {which}", cmd, self.log_path(which), env=env, cwd=self.data_dir,
                       kill_group=True, error=SparkClusterError).start()

    def start(self, wait: bool = True) -> "SparkCluster":
        if self.running():
            return self
        t0 = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(exist_ok=True)
        self.master = self._spawn("master", [MASTER_CLASS, "--host", self.host, "--port", str(self.port),
                                             "--webui-port", str(self.webui_port)])
        log.info("spark master starting", extra={"pid": self.master.pid, "url": self.master_url})
        try:
            self._wait(lambda st: st is not None and st.get("status") == "ALIVE", "the master")
            self.worker = self._spawn("worker", [WORKER_CLASS, self.master_url, "--host", self.host,
                                                 "--cores", str(self.cores), "--memory", self.memory,
                                                 "--work-dir", str(self.work_dir),
                                                 "--webui-port", str(self.worker_webui_port)])
            log.info("spark worker starting", extra={"pid": self.worker.pid})
            if wait:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.last_start_s = time.monotonic() - t0
        log.info("spark cluster ready", extra={"start_s": round(self.last_start_s, 1), "url": self.master_url})
        return self

    def running(self) -> bool:
        return any(p is not None and p.poll() is None for p in (self.master, self.worker))

    def state(self) -> dict | None:
        """The master's /json/ view (status, workers, aliveworkers, cores, activeapps...), or None."""
        if not port_open(self.webui_port, self.host):
            return None
        try:
            with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> list[dict]:
        st = self.state() or {}
        return [w for w in st.get("workers", []) if w.get("state") == "ALIVE"]

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Ready = the master lists our worker ALIVE with all its cores."""
        def ok(st):
            return any(w.get("state") == "ALIVE" and w.get("cores") == self.cores
                       and w.get("host") == self.host for w in (st or {}).get("workers", []))
        self._wait(ok, "the worker to register with the master", timeout_s)

    def _wait(self, pred, what: str, timeout_s: float | None = None) -> None:
        procs = [p for p in (self.master, self.worker) if p is not None]
        wait_ready(lambda: pred(self.state()), f"{what} ({self.master_url}, ui {self.webui_url})",
                   timeout_s or self.start_timeout_s, *procs, step=0.3)

    def log_tail(self, which: str, n: int = 30) -> str:
        return log_tail(self.log_path(which), n)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the worker (it kills its executors) and then the master; a process that does
        not stop within timeout_s is killed with its group."""
        for attr in ("worker", "master"):
            p = getattr(self, attr)
            if p is not None:
                p.terminate(timeout_s)
            setattr(self, attr, None)

    def kill(self) -> None:
        for attr in ("worker", "master"):
            p = getattr(self, attr)
            if p is not None:
                p.kill()
            setattr(self, attr, None)

    def __enter__(self) -> "SparkCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.local.spark_cluster",
                                 description="Run a Spark standalone master + one worker on loopback (foreground).")
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--port", type=int)
    ap.add_argument("--webui-port", type=int)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--memory", default="1g")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Blocked, so sigwait() receives them instead of Python's default handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    c = SparkCluster(args.dir, args.port, args.webui_port, cores=args.cores, memory=args.memory)
    c.start()
    print(f"spark master {c.master_url} (ui {c.webui_url}) with 1 worker, ready in {c.last_start_s:.1f}s; "
          "Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        c.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
