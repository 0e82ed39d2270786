"""Signals: SIGTERM/SIGINT drain before uvicorn's own shutdown, SIGHUP reloads the model.

The drain chains onto the handlers uvicorn installs (read back with `signal.getsignal`, an implementation detail
of uvicorn's `capture_signals`): it is installed only when `EDGE_DRAIN_DELAY_S` > 0, and without it a stop is
stock uvicorn's (close the listener, finish in-flight requests, then the lifespan turns readiness off).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from runtime.errors import NotReady, ReloadFailed, ReloadInProgress
from runtime.service import Service

log = logging.getLogger("runtime.server")


def drain_on_signals(service: Service) -> None:
    """Chain onto the server's SIGTERM/SIGINT handlers: readiness turns false the moment a stop begins, and the
    server's own shutdown (close the listener, finish in-flight requests) starts `drain_delay_s` later."""
    delay = service.settings.drain_delay_s
    if delay <= 0 or threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous) -> None:
            if service.draining:  # a second signal stops at once
                previous(signum, frame)
                return
            service.begin_draining()
            log.info("draining: /ready is false; closing the listener in %.1f s", delay)
            loop.call_soon_threadsafe(loop.call_later, delay, previous, signum, None)

        signal.signal(sig, handler)


def reload_on_sighup(service: Service) -> None:
    """SIGHUP reloads the model as ``POST /admin/reload`` does (asyncio's own signal API)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        async def run() -> None:
            try:
                await service.reload()
            except ReloadFailed:
                pass  # already logged with the reason; the old model keeps serving
            except (ReloadInProgress, NotReady) as e:
                log.warning("SIGHUP ignored: %s", e.message)

        task = loop.create_task(run())
        service.background.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(service.background.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
        pass


#: What `serve` runs when the app has started, in the server's event loop.
SERVER_HOOKS: tuple[Callable[[Service], None], ...] = (drain_on_signals, reload_on_sighup)
