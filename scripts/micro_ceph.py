#!/usr/bin/env python3
"""A throwaway single-host Ceph cluster for tests: 1 mon + 1 osd (+ radosgw), plain processes.

    python scripts/micro_ceph.py start DIR [--pool NAME] [--rgw] [--owner-pid PID]   # prints KEY=VALUE lines
    python scripts/micro_ceph.py stop DIR
    python scripts/micro_ceph.py status DIR

Needs Debian's ceph-mon, ceph-osd and ceph-common (and radosgw for --rgw); no
systemd, cephadm or containers. The cluster listens on 127.0.0.1 only, with
messenger v1, no authentication, one replica and the in-memory object store
(memstore): it is for tests, never for data. ``start`` returns once a real
object write to the pool succeeded and prints (and writes to DIR/env)
``CEPH_CONF``, ``CEPH_POOL``, ``CEPH_MON_ADDR`` and, with --rgw,
``RGW_ENDPOINT``, ``RGW_ACCESS_KEY``, ``RGW_SECRET_KEY``. On failure it stops
what it started. ``stop`` signals only the pids recorded in DIR/pids whose
command line still names DIR/ceph.conf, the osd before the mon (an osd whose
mon is gone waits 5 s for it). With ``--owner-pid``, a small watcher process
stops the cluster when that process ends, so a test run that is killed does
not leave Ceph daemons behind.

Knowledge this relies on (learnt the hard way on Debian 12, Ceph 16):

* A monmap made with ``--add`` records a v2 address even on a v1 port; use
  ``--addv a [v1:IP:PORT]`` together with ``ms bind msgr2 = false``.
* The mon batches map updates once a second by default; short paxos intervals
  make start-up take ~1 s instead of ~5 s.
* A mon command sent right after a client connects can carry a zero fsid and be
  refused with EPERM ("wrong fsid"); such commands are retried. The osd's own
  start-up crush commands hit the same race, so the script places osd.0 in
  CRUSH itself and turns those off.
* Unix socket paths are limited to 107 bytes: admin sockets are off for long DIRs.
* memstore keeps data in the osd's memory; a full osd makes writes hang.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

TIMEOUT = float(os.environ.get("MICRO_CEPH_TIMEOUT", "120"))
RGW_ACCESS_KEY = "MICROCEPHACCESSKEY01"
RGW_SECRET_KEY = "microcephsecretkey0123456789abcdefghijk"
NEEDED = ("ceph-mon", "ceph-osd", "ceph", "monmaptool", "rados")
STOP_ORDER = ("rgw", "osd", "mon")


def say(message: str) -> None:
    print(f"[micro-ceph] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_ours(pid: int, conf: Path) -> bool:
    """Whether ``pid`` is alive (zombies are dead) and runs with ``conf``."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return state != "Z" and str(conf) in cmdline


def conf_text(d: Path, fsid: str, mon_port: int) -> str:
    asok = "$run_dir/$cluster-$name.asok" if len(str(d)) + 30 < 107 else ""
    memstore = os.environ.get("MICRO_CEPH_MEMSTORE_BYTES", str(4 << 30))
    return f"""# Written by scripts/micro_ceph.py: a throwaway test cluster, never for real data.
[global]
fsid = {fsid}
mon host = [v1:127.0.0.1:{mon_port}]
public addr = 127.0.0.1
ms bind msgr2 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = {d}/run
crash dir = {d}/crash
osd objectstore = memstore
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.05
paxos min wait = 0.01
mon warn on insecure global id reclaim allowed = false

[mon]
mon data = {d}/mon/$id
log file = {d}/log/$name.log
mon cluster log file = {d}/log/cluster.log
admin socket = {asok}

[osd]
osd data = {d}/osd/$id
log file = {d}/log/$name.log
admin socket = {asok}
memstore device bytes = {memstore}
osd memory target = 939524096
osd crush update on start = false
osd class update on start = false

[client.rgw.a]
rgw data = {d}/rgw
log file = {d}/log/$name.log
admin socket = {asok}
"""


class Cluster:
    """The processes of one micro cluster under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.conf = self.root / "ceph.conf"
        self.pids = self.root / "pids"
        self.logs = self.root / "log"
        self.deadline = time.monotonic() + TIMEOUT

    def run(self, *argv: str, retries: int = 8) -> str:
        """Run a ceph tool; retry the fsid race (EPERM); return stdout."""
        for _ in range(retries):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            if done.returncode == 0:
                return done.stdout
            output = done.stdout + done.stderr
            if "wrong fsid" not in output and "EPERM" not in output:
                break
            time.sleep(0.2)
        raise RuntimeError(f"{' '.join(argv)} failed:\n{output}")

    def daemon(self, name: str, *argv: str) -> None:
        """Start a daemon in its own session (it outlives this script), record its pid."""
        with open(self.logs / f"{name}.stdout", "ab") as out:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        (self.pids / f"{name}.pid").write_text(f"{process.pid}\n")
        say(f"started {name} (pid {process.pid})")

    def check_alive(self) -> None:
        for pid_file in self.pids.glob("*.pid"):
            if not is_ours(int(pid_file.read_text()), self.conf):
                raise RuntimeError(f"{pid_file.stem} exited during start-up; see {self.logs}.")

    def wait_for(self, what: str, *argv: str) -> None:
        while subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode != 0:
            if time.monotonic() > self.deadline:
                raise RuntimeError(f"Timed out waiting for {what}; see {self.logs}.")
            self.check_alive()
            time.sleep(0.2)

    def start(self, pool: str, rgw: bool) -> dict[str, str]:
        missing = [b for b in (*NEEDED, *(["radosgw", "radosgw-admin"] if rgw else [])) if not shutil.which(b)]
        if missing:
            raise RuntimeError(
                f"Missing {', '.join(missing)}: apt-get install --no-install-recommends "
                "ceph-mon ceph-osd ceph-common" + (" radosgw" if rgw else "")
            )
        if any(self.pids.glob("*.pid")):
            raise RuntimeError(f"{self.root} has pid files; stop that cluster first.")
        for sub in ("mon", "osd", "rgw", "run", "log", "env"):
            path = self.root / sub
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for sub in ("mon/a", "osd/0", "rgw", "run", "log", "pids", "crash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        fsid, mon_port = str(uuid.uuid4()), free_port()
        self.conf.write_text(conf_text(self.root, fsid, mon_port))
        c = str(self.conf)

        monmap = str(self.root / "monmap")
        self.run(
            "monmaptool", "--create", "--clobber", "--fsid", fsid, "--addv", "a", f"[v1:127.0.0.1:{mon_port}]", monmap
        )
        self.run("ceph-mon", "-c", c, "-i", "a", "--mkfs", "--monmap", monmap, retries=1)
        self.daemon("mon", "ceph-mon", "-c", c, "-i", "a", "-f")
        self.wait_for("the monitor", "ceph", "-c", c, "--connect-timeout", "5", "mon", "stat")

        osd_uuid = str(uuid.uuid4())
        osd_id = self.run("ceph", "-c", c, "osd", "new", osd_uuid).strip().splitlines()[-1]
        if osd_id != "0":
            raise RuntimeError(f"Expected osd id 0, got {osd_id!r}.")
        self.run("ceph", "-c", c, "osd", "crush", "add", "osd.0", "1.0", "root=default", "host=localhost")
        self.run("ceph-osd", "-c", c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid, retries=1)
        self.daemon("osd", "ceph-osd", "-c", c, "-i", "0", "-f")

        self.run("ceph", "-c", c, "osd", "pool", "create", pool)
        self.run("ceph", "-c", c, "osd", "pool", "application", "enable", pool, "rados")
        self.wait_for(f"a first write to pool {pool}", "timeout", "10", "rados", "-c", c, "-p", pool, "put", "probe", c)
        self.run("rados", "-c", c, "-p", pool, "rm", "probe")
        env = {"CEPH_CONF": c, "CEPH_POOL": pool, "CEPH_MON_ADDR": f"127.0.0.1:{mon_port}"}

        if rgw:
            port = free_port()
            self.daemon(
                "rgw",
                "radosgw",
                "-c",
                c,
                "-n",
                "client.rgw.a",
                "-f",
                "--rgw-frontends",
                f"beast endpoint=127.0.0.1:{port}",
            )
            endpoint = f"http://127.0.0.1:{port}"
            while True:
                try:
                    urllib.request.urlopen(endpoint, timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > self.deadline:
                        raise RuntimeError(f"radosgw did not answer at {endpoint}; see {self.logs}.") from None
                    self.check_alive()
                    time.sleep(0.2)
            self.run(
                "radosgw-admin", "-c", c, "user", "create", "--uid", "test", "--display-name", "micro-ceph test",
                "--access-key", RGW_ACCESS_KEY, "--secret-key", RGW_SECRET_KEY,
            )  # fmt: skip
            env |= {"RGW_ENDPOINT": endpoint, "RGW_ACCESS_KEY": RGW_ACCESS_KEY, "RGW_SECRET_KEY": RGW_SECRET_KEY}
        (self.root / "env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        return env

    def stop(self) -> int:
        stopped = 0
        for name in STOP_ORDER:
            pid_file = self.pids / f"{name}.pid"
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if is_ours(pid, self.conf):
                os.kill(pid, signal.SIGTERM)
                stopped += 1
                deadline = time.monotonic() + 10
                while is_ours(pid, self.conf) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if is_ours(pid, self.conf):
                    say(f"{name} (pid {pid}) ignored SIGTERM; sending SIGKILL")
                    os.kill(pid, signal.SIGKILL)
                    while is_ours(pid, self.conf):
                        time.sleep(0.05)
            pid_file.unlink(missing_ok=True)
        return stopped

    def watch(self, owner: int, started: str) -> None:
        """Stop the cluster once process ``owner`` (started at ``started``) is gone; return if stopped first."""
        while any(self.pids.glob("*.pid")):
            if start_time(owner) != started:
                say(f"owner {owner} is gone; stopping the cluster")
                self.stop()
                return
            time.sleep(0.5)


def start_time(pid: int) -> str | None:
    """Start time of a live process (tells a reused pid apart), None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def spawn_watcher(root: Path, owner: int) -> None:
    """Start a detached process that stops the cluster when ``owner`` ends."""
    started = start_time(owner)
    if started is None:
        raise RuntimeError(f"Owner process {owner} is not running.")
    argv = [sys.executable, str(Path(__file__).resolve()), "watch", str(root), "--owner-pid", str(owner)]
    with open(root / "log" / "watch.stdout", "ab") as out:
        process = subprocess.Popen(
            [*argv, "--owner-start", started],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (root / "watch.pid").write_text(f"{process.pid}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throwaway single-host Ceph cluster for tests.")
    parser.add_argument("command", choices=["start", "stop", "status", "watch"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--pool", default="dynostore")
    parser.add_argument("--rgw", action="store_true", help="also start an S3 gateway (radosgw)")
    parser.add_argument("--owner-pid", type=int, help="stop the cluster when this process ends")
    parser.add_argument("--owner-start", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(args.dir)
    if args.command == "watch":
        cluster.watch(args.owner_pid, args.owner_start)
        return 0
    if args.command == "stop":
        say(f"stopped {cluster.stop()} process(es)")
        return 0
    if args.command == "status":
        for pid_file in sorted(cluster.pids.glob("*.pid")):
            pid = int(pid_file.read_text())
            print(f"{pid_file.stem} {pid} {'running' if is_ours(pid, cluster.conf) else 'dead'}")
        return 0
    started = time.monotonic()
    try:
        env = cluster.start(args.pool, args.rgw)
        if args.owner_pid:
            spawn_watcher(cluster.root, args.owner_pid)
    except BaseException as exc:
        say(f"start failed, cleaning up: {exc}")
        cluster.stop()
        return 1
    say(f"ready in {time.monotonic() - started:.1f} s")
    for key, value in env.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
