"""The embedded default's in-process worker (``herald serve``): the same
job (:func:`~worker.delivery.jobs.run_job`) as the Celery task, fed by an in-process queue on
one background thread with its own event loop."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from worker.core.config import Settings
from worker.delivery.jobs import run_job
from worker.delivery.recovery import Housekeeping, Sweeper
from worker.delivery.runtime import build_runtime

log = structlog.get_logger("herald.embedded")
_Job = tuple[str, list[int]] | None


class EmbeddedWorker:
    def __init__(self, settings: Settings, notify: Callable[[str], None]) -> None:
        self._settings = settings
        self._notify = notify
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="herald-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def enqueue(self, request_id: str, ids: list[int], countdown: float = 0.0) -> None:
        if countdown <= 0:
            self._jobs.put((request_id, ids))
            return
        timer = threading.Timer(countdown, self._fire, args=(request_id, ids))
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _fire(self, request_id: str, ids: list[int]) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive()}
        self._jobs.put((request_id, ids))

    def _run(self) -> None:
        runtime = build_runtime(self._settings, notify=self._notify)
        # Work left unfinished by a previous run (the process was stopped mid-send).
        Sweeper(runtime.sessions, self.enqueue, grace_s=0,
                batch_size=self._settings.batch_size).tick()
        housekeeping = Housekeeping(self._settings, runtime.sessions, self.enqueue)
        while True:
            try:
                job = self._jobs.get(timeout=self._settings.sweep_interval_s)
            except queue.Empty:
                housekeeping.tick()
                continue
            if job is None:
                break
            request_id, ids = job
            try:
                run_job(runtime, request_id, ids, self.enqueue)
            except Exception:
                log.exception("batch failed", request_id=request_id)
        runtime.loop.run_until_complete(runtime.providers.aclose())  # type: ignore[attr-defined]

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        self._jobs.put(None)
        self._thread.join(timeout)
