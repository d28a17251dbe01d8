"""`make bench`: Herald end to end against the raw APNs client, side by side in one run.

Starts what it needs — a fake APNs (HTTP/2 + TLS, the test suite's), Postgres database,
Redis db, one `herald api` and `herald worker` processes — then measures:

- raw: ApnsProvider (aioapns with the project's fixes), ~100 in flight, N notifications
  straight to the fake: the machine's physical limit for this work;
- herald: the same N notifications as send_users_messages requests of 100 users × 2 APNs
  endpoints from several concurrent boto3 clients, through API → Celery → worker → fake →
  result rows → answer;
- ratios: herald/raw throughput, p50/p95 latency of one 100-user send over the raw client's
  time for the same 200 notifications, CPU seconds per 1,000 notifications per process;
- growth at 1×, 4×, 16× N (throughput and peak RSS), and a mixed run (APNs + FCM + e-mail).

Prints a table, writes bench/out/results.csv (and a PNG plot when matplotlib is installed).
Every figure is a ratio measured in this run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import USERS_PER_REQUEST, load_run  # noqa: E402
from bench.raw import BUNDLE, KEY_ID, TEAM, raw_client_run  # noqa: E402
from tests.fakes.apns import FakeApns  # noqa: E402
from tests.fakes.fcm import FakeFcm  # noqa: E402
from tests.fakes.smtp import FakeSmtp  # noqa: E402
from tests.stack import Stack, pinpoint  # noqa: E402
from worker.core.config import Settings  # noqa: E402

OUT = ROOT / "bench" / "out"


# --- measuring processes ------------------------------------------------------------------


@dataclass
class ProcessGroup:
    name: str
    processes: list[psutil.Process]
    cpu_start: float = 0.0
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def cpu(self) -> float:
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def rss(self) -> int:
        total = 0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def start(self) -> None:
        self.cpu_start = self.cpu()
        self.peak_rss = self.rss()
        self._stop.clear()

        def sample() -> None:
            while not self._stop.wait(0.2):
                self.peak_rss = max(self.peak_rss, self.rss())

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> tuple[float, int]:
        self._stop.set()
        return self.cpu() - self.cpu_start, max(self.peak_rss, self.rss())


def family(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def named(name: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == name]


# --- the raw client -------------------------------------------------------------------------


def raw_run(settings: Settings, key: str, count: int, in_flight: int = 100) -> float:
    """Seconds for the raw client to push ``count`` notifications, measured in a process of
    its own — as Herald's worker is — so the fake APNs in this process is not starved."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(raw_client_run, settings.apns_url, str(settings.ca_bundle), key,
                           count, in_flight).result()


# --- Herald end to end --------------------------------------------------------------------


def prepare_app(client: Any, key: str, users: int, mixed: dict[str, Any] | None) -> str:
    app_id = client.create_app(CreateApplicationRequest={"Name": "bench"})[
        "ApplicationResponse"]["Id"]
    client.update_apns_channel(ApplicationId=app_id, APNSChannelRequest={
        "TokenKey": key, "TokenKeyId": KEY_ID, "TeamId": TEAM, "BundleId": BUNDLE,
        "DefaultAuthenticationMethod": "TOKEN"})
    if mixed:
        client.update_gcm_channel(ApplicationId=app_id, GCMChannelRequest={
            "ServiceJson": json.dumps(mixed["service_account"]),
            "DefaultAuthenticationMethod": "TOKEN"})
        client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
            "FromAddress": "bench@herald.test", "Identity": "herald.test"})
    step = 33  # at most 100 endpoints per UpdateEndpointsBatch
    for start in range(0, users, step):
        items = []
        for i in range(start, min(users, start + step)):
            if mixed:
                channels = [("APNS", secrets.token_hex(32)), ("GCM", secrets.token_hex(20)),
                            ("EMAIL", f"b{i}@bench.test")]
            else:
                channels = [("APNS", secrets.token_hex(32)), ("APNS", secrets.token_hex(32))]
            items += [{"Id": f"u{i}-{n}", "ChannelType": channel, "Address": address,
                       "User": {"UserId": f"u{i}"}}
                      for n, (channel, address) in enumerate(channels)]
        client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": items})
    return str(app_id)


def herald_run(url: str, app_id: str, users: int, requests: int, clients: int
               ) -> tuple[float, list[float], int]:
    """(seconds, per-request latencies, notifications delivered), the boto3 clients running in
    a process of their own so they do not share this process's GIL with the fakes."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(load_run, url, app_id, users, requests, clients).result()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="notifications at 1× (default 2000)")
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--clients", type=int, default=4, help="concurrent boto3 clients")
    parser.add_argument("--workers", type=int, default=1, help="herald worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size per worker")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    apns = FakeApns(BUNDLE)
    apns.start()
    key = apns.new_token_key(KEY_ID, TEAM)
    fcm = FakeFcm()
    fcm.start()
    smtp = FakeSmtp().start()
    settings = Settings(apns_url=apns.url, ca_bundle=apns.ca_path, provider_timeout_s=30)
    stack = Stack("bench", env={
        "HERALD_APNS_URL": apns.url, "HERALD_CA_BUNDLE": str(apns.ca_path),
        "HERALD_FCM_URL": fcm.base_url, "HERALD_FCM_TOKEN_URL": fcm.token_url,
        "HERALD_SMTP_URL": smtp.url,
        "HERALD_SYNC_TIMEOUT_S": "120", "HERALD_PROVIDER_TIMEOUT_S": "30",
        "HERALD_RATE_LIMIT_RPS": "100000", "HERALD_LOG_LEVEL": "WARNING"})
    rows: list[dict[str, Any]] = []
    try:
        workers = [stack.start_worker(concurrency=args.concurrency) for _ in range(args.workers)]
        url = stack.start_api()
        client = pinpoint(url)
        max_users = max(USERS_PER_REQUEST, args.n * max(int(s) for s in args.scales.split(","))
                        // 2)
        max_users = min(max_users, 5000)  # requests cycle over the registered users
        app_id = prepare_app(client, key, max_users, None)
        mixed_app = prepare_app(client, key, 1000, {
            "service_account": fcm.add_service_account(project_id="bench")})
        herald_run(url, app_id, max_users, 2, 2)  # warm up connections and caches
        raw_200 = statistics.median(raw_run(settings, key, 200) for _ in range(3))
        # Latency of one send on an idle system: one client, one request at a time.
        _, alone, _ = herald_run(url, app_id, max_users, 15, 1)
        idle = {"p50": percentile(alone, 0.5), "p95": percentile(alone, 0.95)}
        groups = {
            "api": ProcessGroup("api", family(stack.apis[0][0].pid)),
            "worker": ProcessGroup("worker", [p for w in workers for p in family(w.pid)]),
            "postgres": ProcessGroup("postgres", named("postgres")),
            "redis": ProcessGroup("redis", named("redis-server")),
        }
        runs = [(int(s), "apns", app_id, max_users) for s in args.scales.split(",")]
        runs.append((1, "mixed", mixed_app, 1000))
        for scale, kind, target, users in runs:
            count = args.n * scale
            raw_s = raw_run(settings, key, count)
            requests = max(1, count // (USERS_PER_REQUEST * (3 if kind == "mixed" else 2)))
            for group in groups.values():
                group.start()
            herald_s, latencies, delivered = herald_run(url, target, users, requests,
                                                        args.clients)
            usage = {name: group.stop() for name, group in groups.items()}
            raw_rate = count / raw_s
            herald_rate = delivered / herald_s
            row = {
                "run": kind, "scale": scale, "notifications": delivered,
                "raw_per_s": round(raw_rate), "herald_per_s": round(herald_rate),
                "ratio": round(herald_rate / raw_rate, 2),
                "p50_s": round(percentile(latencies, 0.5), 3),
                "p95_s": round(percentile(latencies, 0.95), 3),
                "raw_200_s": round(raw_200, 3),
                "p50_over_raw_200": round(percentile(latencies, 0.5) / raw_200, 1),
                "p95_over_raw_200": round(percentile(latencies, 0.95) / raw_200, 1),
                "idle_p50_over_raw_200": round(idle["p50"] / raw_200, 1),
                "idle_p95_over_raw_200": round(idle["p95"] / raw_200, 1),
            }
            for name, (cpu, rss) in usage.items():
                row[f"cpu_s_per_1k_{name}"] = round(cpu / max(1, delivered) * 1000, 3)
                if name in ("api", "worker"):
                    row[f"peak_rss_mb_{name}"] = round(rss / 2**20)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stack.stop()
        apns.stop()
        fcm.stop()
        smtp.stop()
    report(rows)


def report(rows: list[dict[str, Any]]) -> None:
    machine = f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB"
    print(f"\nHerald benchmark, {time.strftime('%Y-%m-%d')}, {machine}")
    header = ("run", "scale", "raw/s", "herald/s", "ratio", "idle p50/raw200",
              "idle p95/raw200", "load p50/raw200", "load p95/raw200",
              "cpu/1k api", "worker", "pg", "redis", "rss api MB", "rss worker MB")
    print(" ".join(f"{h:>11}" for h in header))
    for r in rows:
        values = (r["run"], f"{r['scale']}x", r["raw_per_s"], r["herald_per_s"], r["ratio"],
                  r["idle_p50_over_raw_200"], r["idle_p95_over_raw_200"],
                  r["p50_over_raw_200"], r["p95_over_raw_200"], r["cpu_s_per_1k_api"],
                  r["cpu_s_per_1k_worker"], r["cpu_s_per_1k_postgres"],
                  r["cpu_s_per_1k_redis"], r["peak_rss_mb_api"], r["peak_rss_mb_worker"])
        print(" ".join(f"{v!s:>11}" for v in values))
    with open(OUT / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten: {OUT / 'results.csv'}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    apns_rows = [r for r in rows if r["run"] == "apns"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["notifications"] for r in apns_rows]
    left.plot(xs, [r["raw_per_s"] for r in apns_rows], "o-", label="raw client")
    left.plot(xs, [r["herald_per_s"] for r in apns_rows], "o-", label="herald")
    left.set_xscale("log")
    left.set_xlabel("notifications")
    left.set_ylabel("notifications / s")
    left.legend()
    right.plot(xs, [r["p50_s"] for r in apns_rows], "o-", label="p50")
    right.plot(xs, [r["p95_s"] for r in apns_rows], "o-", label="p95")
    right.set_xscale("log")
    right.set_xlabel("notifications")
    right.set_ylabel("seconds per 100-user send")
    right.legend()
    figure.tight_layout()
    figure.savefig(OUT / "results.png")
    print(f"written: {OUT / 'results.png'}")


if __name__ == "__main__":
    main()
