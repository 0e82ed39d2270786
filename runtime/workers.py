"""Worker processes that add up: one shared directory for prometheus-client's multiprocess mode and readiness.

With ``--workers N`` uvicorn spawns N processes sharing the port; a scrape or a probe reaches one of them. The
parent creates one directory per server run (`shared_dir`) and exports it as ``PROMETHEUS_MULTIPROC_DIR``
before spawning, so every worker's metrics are written there (prometheus-client's mmap files, one set per pid)
and `/metrics` from any worker aggregates them all. Readiness uses the same directory: each worker touches
``ready-<pid>`` when its model is warm and removes it when it drains, and `/ready` answers 200 only when N live
workers have. A worker that exits cleanly marks itself dead (`WorkerGroup.exit`); one that crashed is found by
its pid no longer existing and is marked dead at the next scrape or probe (`WorkerGroup.reap`), so its live
gauges (in-flight requests, queue depth) stop counting. Knows no HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_READY = "ready-"
_PID = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    """The shared directory this process writes its metrics to, if it runs in multiprocess mode."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _clear(path: Path) -> None:
    for entry in path.iterdir():
        if entry.suffix == ".db" or entry.name.startswith(_READY):
            entry.unlink(missing_ok=True)


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """The directory for one server run, exported as ``PROMETHEUS_MULTIPROC_DIR`` for the workers to inherit.

    A directory the operator set in that variable is used and emptied of metric files and ready markers at start
    and at exit (values left by an earlier run would be added to this one's); otherwise a fresh temporary one is
    created and removed at exit.
    """
    given = multiprocess_dir()
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        _clear(given)
        try:
            yield given
        finally:
            _clear(given)
        return
    path = Path(tempfile.mkdtemp(prefix="edge-workers-"))
    os.environ[ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(ENV, None)
        shutil.rmtree(path, ignore_errors=True)


class WorkerGroup:
    """This worker's view of the group: its ready marker, the others' markers, dead workers' metric files."""

    def __init__(self, path: Path, workers: int, pid: int | None = None) -> None:
        self.path = path
        self.workers = workers
        self.pid = pid if pid is not None else os.getpid()

    def mark_ready(self) -> None:
        (self.path / f"{_READY}{self.pid}").touch()

    def mark_not_ready(self) -> None:
        (self.path / f"{_READY}{self.pid}").unlink(missing_ok=True)

    def ready_workers(self) -> int:
        """Live workers whose model is loaded and warm (markers of dead pids are removed on the way)."""
        ready = 0
        for entry in self.path.glob(f"{_READY}*"):
            pid = entry.name[len(_READY) :]
            if not pid.isdigit():
                continue
            if _alive(int(pid)):
                ready += 1
            else:
                entry.unlink(missing_ok=True)
        return ready

    def all_ready(self) -> bool:
        return self.ready_workers() >= self.workers

    def reap(self) -> list[int]:
        """Mark every worker whose pid is gone as dead (its `live*` gauges stop counting); the pids reaped."""
        from prometheus_client import multiprocess

        dead = sorted({int(m.group(1)) for e in self.path.glob("*.db") if (m := _PID.search(e.name))})
        dead = [pid for pid in dead if pid != self.pid and not _alive(pid)]
        for pid in dead:
            multiprocess.mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]
            (self.path / f"{_READY}{pid}").unlink(missing_ok=True)
        return dead

    def exit(self) -> None:
        """This worker is stopping: not ready, and its live gauges leave the sums."""
        from prometheus_client import multiprocess

        self.mark_not_ready()
        multiprocess.mark_process_dead(self.pid, str(self.path))  # type: ignore[no-untyped-call]
