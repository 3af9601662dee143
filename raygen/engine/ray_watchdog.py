"""Reap the processes of raygen's private local Ray cluster when its driver dies without shutting Ray down.

A driver stopped normally (end, Ctrl-C, SIGTERM) takes its private cluster with it. Killed outright (SIGKILL,
the OOM killer), it cannot run any handler: Ray's GCS and raylet still follow it, but the raylet's agents
(`ray::DashboardAgent`, `ray::RuntimeEnvAgent`) notice their raylet is gone, try to report it to the dead GCS
and hang there for good, ignoring SIGTERM (Ray 2.60; ray-project/ray#59162). So `watch()` starts this file as
a small process in its own session. While the driver lives (its pid with its start time, read from /proc) it
notes the raylet's descendants (pid and start time, so a reused pid is never mistaken); once the driver is gone,
however it ended, it gives Ray's own fate-sharing a grace period, then kills (SIGKILL) what is left of the
processes it noted, and exits. Polling the driver's pid needs nothing the driver must keep open (a pipe from the
driver was tried first; a test failure then was a race of the test, not the pipe, so either works).

Linux only (it reads /proc); elsewhere `watch()` does nothing. Only the standard library: the process starts
in milliseconds and imports nothing of raygen, Ray or torch.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

GRACE_S = 5.0  # Ray's agents give up on their raylet after 5 checks; they then hang rather than exit
POLL_S = 2.0  # a scan of /proc costs a few ms
STARTUP_S, STARTUP_POLL_S = 30.0, 0.2

log = logging.getLogger("raygen.watchdog")


def watch(raylet_pid: int, log_dir: str | None = None) -> subprocess.Popen | None:
    """Start the watchdog of this driver's private cluster, whose raylet is `raylet_pid` (a child of this
    process); its errors go to LOG_DIR/raygen_watchdog.err (Ray's session logs). No-op without /proc."""
    if not os.path.isdir(f"/proc/{raylet_pid}"):
        return None
    err = open(os.path.join(log_dir, "raygen_watchdog.err"), "ab") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(os.getpid()), str(raylet_pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,  # no Ctrl-C from the driver's terminal; outlives the driver's process group
            close_fds=True,
        )
    finally:
        if err is not subprocess.DEVNULL:
            err.close()
    proc.wait()  # the first process checks the raylet, notes its processes, forks the watchdog (_main)
    return proc


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    try:  # a process that is exiting may give a short or empty stat (it did, as Ray's went down)
        return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _is_raylet_of(pid: int, driver: int) -> bool:
    """Whether `pid` is a Ray raylet started by the process `driver`: the one check that keeps the watchdog
    from ever touching a process outside that private cluster."""
    st = _stat(pid)
    return pid > 1 and st is not None and st[0] == driver and os.path.basename(_program(pid)) == b"raylet"


def _program(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0]
    except OSError:
        return b""


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of `root`."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            parents.setdefault(st[0], []).append(int(name))
            starts[int(name)] = st[1]
    out, todo = {}, [root]
    while todo:
        for child in parents.get(todo.pop(), ()):
            if child not in out:
                out[child] = starts[child]
                todo.append(child)
    return out


def _main(driver: int, raylet: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s raygen watchdog: %(message)s")
    if not _is_raylet_of(raylet, driver):
        log.warning("pid %d is not a raylet started by driver %d: nothing to watch", raylet, driver)
        return
    driver_start, raylet_start = _stat(driver)[1], _stat(raylet)[1]
    noted: dict[int, int] = {raylet: raylet_start}

    def note() -> None:
        st = _stat(raylet)
        if st is not None and st[1] == raylet_start:  # the same raylet, still there: note its processes
            noted.update(_descendants(raylet))

    note()  # before watch() returns: the driver waits for this process
    # Not a child of the driver: as the driver's child the watchdog was seen to die within a second of a killed
    # driver, before it could act (cause not established), so it goes on in a forked grandchild.
    if os.fork() > 0:
        os._exit(0)
    log.info("watching raylet %d of driver %d", raylet, driver)
    started = time.monotonic()
    while (st := _stat(driver)) is not None and st[1] == driver_start:  # until the driver is gone
        # the agents start a moment after the raylet: look often at first, so a driver killed then is covered
        time.sleep(STARTUP_POLL_S if time.monotonic() - started < STARTUP_S else POLL_S)
        note()
    log.info("driver %d gone; %d processes of its cluster noted", driver, len(noted))
    time.sleep(GRACE_S)
    for pid, start in noted.items():
        st = _stat(pid)
        if pid > 1 and st is not None and st[1] == start:  # the same process, not a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
                log.info("killed leftover process %d", pid)
            except OSError:
                pass


if __name__ == "__main__":
    _main(int(sys.argv[1]), int(sys.argv[2]))
