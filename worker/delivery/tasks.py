"""Celery tasks: thin wrappers around plain functions (``worker.delivery.batch``).

At-least-once by configuration (DESIGN.md §7): late acks and reject-on-worker-lost, so a
killed worker's task is redelivered; a visibility timeout longer than any retry countdown, so
a delayed retry is not run twice; and the recovery sweep (``worker.delivery.recovery``), run by
every worker's main process, re-enqueues whatever the broker lost.

Outages (DESIGN.md §8): the consumer reconnects to the broker for as long as it takes; a task
that cannot reach the database or the broker leaves its rows to the sweep instead of failing
noisily; each outage is logged once when it starts and once when it ends (``worker.core.outages``).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any

import structlog
from celery import Celery, bootsteps, signals
from celery.exceptions import CPendingDeprecationWarning

from worker.core.config import get_settings
from worker.core.db import session_factory
from worker.core.logs import configure_logging
from worker.core.outages import BROKER
from worker.core.vocabulary import QUEUE
from worker.delivery.batch import Runtime
from worker.delivery.jobs import run_job
from worker.delivery.recovery import Housekeeping
from worker.delivery.runtime import build_runtime

log = structlog.get_logger("herald.worker")
DELIVER_TASK = "herald.deliver"

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
        # Reconnect for as long as the broker is away (Celery gives up after 100 tries by
        # default — about 45 minutes — and the worker exits).
        broker_connection_max_retries=None,
        broker_transport_options=_transport_options(settings.broker_url, visibility),
        # The API publishes inside a request: when the broker is away, give up after one more
        # try (the rows are committed and the sweep enqueues them) instead of Celery's three.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0.2,
                                   "interval_step": 0.2, "interval_max": 0.2},
        # A task holding sends keeps its lease and its outcomes through a broker outage; its
        # ack is lost with the connection and the redelivered task finds its rows final.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )


def _transport_options(broker_url: str | None, visibility: float) -> dict[str, Any]:
    options: dict[str, Any] = {"visibility_timeout": visibility}
    if broker_url and broker_url.startswith(("redis://", "rediss://")):
        # An unreachable host must not hang a publish (the API enqueues inside a request).
        options["socket_connect_timeout"] = 3
    return options


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
    report = run_job(process_runtime(), request_id, ids, enqueue)
    return {"claimed": report.claimed, "final": report.final}


def _housekeeping(stop: threading.Event) -> None:
    settings = get_settings()
    housekeeping = Housekeeping(settings, session_factory(settings), enqueue)
    while not stop.wait(settings.sweep_interval_s):
        housekeeping.tick()


_stop_sweep = threading.Event()


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_sweeper(**_: Any) -> None:
    threading.Thread(target=_housekeeping, args=(_stop_sweep,), daemon=True,
                     name="herald-housekeeping").start()


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _stop_sweeper(**_: Any) -> None:
    _stop_sweep.set()


# --- one line when the broker is lost, one when it is back ------------------------------------


class _BrokerLost(logging.Filter):
    """Turns the consumer's reconnect chatter (a line, with a traceback, per retry for as long as
    the outage lasts) into one ``dependency unreachable`` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(("consumer: Connection to broker lost",
                               "consumer: Cannot connect to")):
            error = record.exc_info[1] if record.exc_info else None
            BROKER.lost(error or message.splitlines()[0].removeprefix("consumer: "))
            return False
        return True


class BrokerWatch(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs each time the consumer has (re)connected to the broker."""

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, _consumer: Any) -> None:
        BROKER.back()


logging.getLogger("celery.worker.consumer.consumer").addFilter(_BrokerLost())


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _log_through_herald(loglevel: int | None = None, **_: Any) -> None:
    """Connected, Celery configures no logging of its own (no handlers, no stdout redirect):
    its lines go through worker.logs with Herald's."""
    configure_logging(logging.getLevelName(loglevel) if loglevel else get_settings().log_level)
# Celery 5 warns on every reconnect that Celery 6 will cancel running tasks on a connection
# loss; Herald sets that choice explicitly (above), so the warning says nothing.
warnings.filterwarnings("ignore", category=CPendingDeprecationWarning)
app.steps["consumer"].add(BrokerWatch)
