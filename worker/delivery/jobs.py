"""One job of the delivery queue, whoever runs it: the Celery task and the embedded worker.

A job is a batch of one request's delivery ids. Deliver it (:func:`~worker.delivery.batch.
deliver_batch`), then put its retries back on the queue at their delay. A database or broker
outage is not the job's failure: nothing more can be done now, and the recovery sweep hands the
rows out again once the outage is over.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from worker.core.outages import BROKER, DATABASE, broker_unreachable, database_unreachable
from worker.delivery.batch import BatchReport, Runtime, deliver_batch

log = structlog.get_logger("herald.worker")

# (request id, delivery ids, delay in seconds): how a worker puts a batch on its queue
Enqueue = Callable[[str, list[int], float], None]


def run_job(runtime: Runtime, request_id: str, ids: list[int], enqueue: Enqueue) -> BatchReport:
    try:
        report = deliver_batch(runtime, request_id, ids)
    except MemoryError:
        # Celery re-raises a task's MemoryError in the worker's main process, which exits.
        # Preparation already turns one into a row's failure; one raised later leaves the
        # batch's leases to run out, and a row that keeps doing it is quarantined at claim.
        log.error("batch ran out of memory", request_id=request_id, rows=len(ids))
        return BatchReport(claimed=0)
    except Exception as exc:
        if not database_unreachable(exc):
            raise
        # Nothing was sent: the rows are unclaimed or their lease runs out, and the sweep
        # hands them out again once the database is back.
        DATABASE.lost(exc)
        return BatchReport(claimed=0)
    try:
        for retry in report.retries or ():
            enqueue(request_id, retry.ids, retry.delay_s)
    except Exception as exc:
        if not broker_unreachable(exc):
            raise
        BROKER.lost(exc)  # the rows are due at their retry time; the sweep enqueues them then
    return report
