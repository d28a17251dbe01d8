"""The load side of the benchmark: concurrent boto3 clients sending 100-user requests, in a
process of their own (started by ``bench.__main__.herald_run``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.stack import pinpoint

USERS_PER_REQUEST = 100
MESSAGE = {
    "APNSMessage": {"Title": "Bench", "Body": "A notification of usual size"},
    "GCMMessage": {"Title": "Bench", "Body": "A notification of usual size"},
    "EmailMessage": {"Body": "A notification of usual size"},
}


def load_run(url: str, app_id: str, users: int, requests: int, clients: int
               ) -> tuple[float, list[float], int]:
    """(seconds, per-request latencies, notifications delivered)."""
    pool = [pinpoint(url) for _ in range(clients)]
    latencies: list[float] = []
    delivered = 0
    lock = threading.Lock()

    def one(n: int) -> None:
        nonlocal delivered
        first = (n * USERS_PER_REQUEST) % max(1, users - USERS_PER_REQUEST + 1)
        started = time.perf_counter()
        response = pool[n % clients].send_users_messages(
            ApplicationId=app_id, SendUsersMessageRequest={
                "MessageConfiguration": MESSAGE,
                "Users": {f"u{i}": {} for i in range(first, first + USERS_PER_REQUEST)}})
        took = time.perf_counter() - started
        results = response["SendUsersMessageResponse"]["Result"]
        ok = sum(1 for u in results.values() for r in u.values()
                 if r["DeliveryStatus"] == "SUCCESSFUL")
        with lock:
            latencies.append(took)
            delivered += ok

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as executor:
        list(executor.map(one, range(requests)))
    return time.perf_counter() - started, latencies, delivered


