"""Celery tasks: thin wrappers around plain functions (``worker.delivery``).

At-least-once by configuration (DESIGN.md §7): late acks and reject-on-worker-lost, so a
killed worker's task is redelivered; a visibility timeout longer than any retry countdown, so
a delayed retry is not run twice; and the recovery sweep (``worker.recovery``), run by every
worker's main process, re-enqueues whatever the broker lost.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import structlog
from celery import Celery, signals

from worker.config import get_settings
from worker.db import session_factory
from worker.delivery import Runtime, deliver_batch
from worker.recovery import sweep
from worker.runtime import build_runtime

log = structlog.get_logger("herald.worker")
DELIVER_TASK = "herald.deliver"
QUEUE = "herald"

app = Celery("herald")


def configure(celery: Celery) -> None:
    settings = get_settings()
    visibility = max(3600.0, settings.retry_max_delay_s * 4)
    celery.conf.update(
        broker_url=settings.broker_url or "memory://",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility},
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )


configure(app)

_runtime: tuple[int, Runtime] | None = None


def process_runtime() -> Runtime:
    """One runtime per worker process (created after fork: connections don't cross it)."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        _runtime = (os.getpid(), build_runtime(get_settings()))
    return _runtime[1]


def enqueue(request_id: str, ids: list[int], countdown: float = 0.0) -> None:
    app.send_task(
        DELIVER_TASK, args=(request_id, ids), countdown=countdown or None, queue=QUEUE
    )


@app.task(name=DELIVER_TASK)  # type: ignore[untyped-decorator]
def deliver(request_id: str, ids: list[int]) -> dict[str, Any]:
    report = deliver_batch(process_runtime(), request_id, ids)
    for retry in report.retries or ():
        enqueue(request_id, retry.ids, retry.delay_s)
    return {"claimed": report.claimed, "final": report.final}


def _sweep_forever(stop: threading.Event) -> None:
    settings = get_settings()
    sessions = session_factory(settings)
    while not stop.wait(settings.sweep_interval_s):
        try:
            found = sweep(
                sessions, enqueue, grace_s=settings.recovery_grace_s,
                batch_size=settings.batch_size,
            )
            if found:
                log.warning("recovered abandoned deliveries", count=found)
        except Exception:
            log.exception("recovery sweep failed")


_stop_sweep = threading.Event()


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_sweeper(**_: Any) -> None:
    threading.Thread(target=_sweep_forever, args=(_stop_sweep,), daemon=True,
                     name="herald-sweep").start()


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _stop_sweeper(**_: Any) -> None:
    _stop_sweep.set()
