"""The ``herald`` command (DESIGN.md §2).

    herald serve      API + in-process worker on the embedded default (SQLite, no broker)
    herald api        the production API process (uvicorn)
    herald worker     a production worker process (Celery)
    herald migrate    Alembic upgrade to head
    herald keys ...   create / list / revoke access keys
    herald results    a request's per-endpoint outcomes
    herald prune      delete final results older than HERALD_RESULT_RETENTION_S, now
    herald reencrypt-secrets   stored secrets moved to the current HERALD_SECRET_KEY
    herald dashboard-link   a signed link that opens the operations dashboard
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import sys
import unicodedata
from pathlib import Path

import structlog

from worker.core.config import ConfigError, Settings, get_settings
from worker.core.logs import configure_logging


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        sys.exit(f"herald: {exc}")


def _dev_credentials(settings: Settings) -> Path | None:
    """The embedded default's one-step key: created on first start, kept as an AWS shared
    credentials file with a ``herald`` profile."""
    if settings.root_access_key_id:
        return None
    from worker.core.db import session_scope
    from worker.management.access_keys import create_key

    path = (settings.data_dir / "credentials").resolve()
    if not path.exists():
        with session_scope(settings) as session:
            key_id, secret = create_key(session, settings, description="embedded default key")
        profile = configparser.ConfigParser()
        profile["herald"] = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            profile.write(fh)
    return path


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn
    from sqlalchemy import make_url

    from api.app import create_app
    from api.server import uvicorn_options
    from api.state import Herald
    from worker.core.migrate import upgrade
    from worker.delivery.embedded import EmbeddedWorker

    settings = _settings()
    if not settings.embedded:
        sys.exit("herald serve is the embedded mode: unset HERALD_BROKER_URL, or run "
                 "`herald api` and `herald worker`")
    upgrade(settings)
    credentials = _dev_credentials(settings)
    holder: dict[str, EmbeddedWorker] = {}

    def start(herald: Herald) -> None:
        holder["worker"] = EmbeddedWorker(settings, notify=herald.waiters.wake)
        holder["worker"].start()

    def stop(_herald: Herald) -> None:
        holder["worker"].stop()

    app = create_app(
        settings,
        enqueue=lambda request_id, ids: holder["worker"].enqueue(request_id, ids),
        lifespan_hooks=(start, stop),
    )
    # Events like every other line of the process (one JSON stream; readable on a terminal).
    log = structlog.get_logger("herald.serve")
    log.info("herald embedded", url=f"http://{args.host}:{args.port}",
             database=make_url(settings.sqlalchemy_url).render_as_string(hide_password=True))
    if credentials:
        log.info("access key", AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_PROFILE="herald")
    uvicorn.run(app, host=args.host, port=args.port, log_config=None,
                **uvicorn_options(settings))


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    from api.server import uvicorn_options

    settings = _settings()
    shared_metrics = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several processes behind one port: /metrics must add up all of them.
        import tempfile

        shared_metrics = tempfile.mkdtemp(prefix="herald-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared_metrics
    try:
        uvicorn.run("api.main:app", host=args.host, port=args.port, workers=args.workers,
                    proxy_headers=True, log_config=None, **uvicorn_options(settings))
    finally:
        if shared_metrics:
            import shutil

            shutil.rmtree(shared_metrics, ignore_errors=True)


def cmd_worker(args: argparse.Namespace) -> None:
    settings = _settings()
    from worker.core.vocabulary import QUEUE
    from worker.delivery.tasks import app

    # Logs go through worker.core.logs (worker.delivery.tasks connects Celery's setup_logging);
    # the banner is text on stdout, so it is shown on a terminal only.
    quiet = [] if sys.stdout.isatty() else ["--quiet"]
    argv = [*quiet, "worker", "-Q", QUEUE, "--loglevel", args.loglevel or settings.log_level,
            "-n", args.hostname]
    if args.concurrency:
        argv += ["-c", str(args.concurrency)]
    app.worker_main(argv)


def cmd_migrate(_args: argparse.Namespace) -> None:
    from worker.core.migrate import upgrade

    upgrade(_settings())
    print("database is at the latest schema", file=sys.stderr)


def cmd_keys(args: argparse.Namespace) -> None:
    from worker.core.db import session_scope
    from worker.core.errors import PinpointError
    from worker.management.access_keys import create_key, list_keys, revoke_key

    settings = _settings()
    try:
        with session_scope(settings) as session:
            if args.keys_command == "create":
                key_id, secret = create_key(session, settings, args.app or None, args.description)
                print(f"AWS_ACCESS_KEY_ID={key_id}")
                print(f"AWS_SECRET_ACCESS_KEY={secret}")
                print("The secret is shown once; store it now.", file=sys.stderr)
            elif args.keys_command == "list":
                for key in list_keys(session):
                    scope = ",".join(key.app_ids) if key.app_ids else "all apps"
                    state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                    print(f"{key.id}\t{state}\t{scope}\t{key.description or ''}")
            else:
                revoke_key(session, args.key_id)
                print(f"revoked {args.key_id}", file=sys.stderr)
    except PinpointError as exc:
        sys.exit(f"herald: {exc.message}")


def cmd_reencrypt_secrets(_args: argparse.Namespace) -> None:
    from worker.core.crypto import SecretDecryptionError, reencrypt_stored
    from worker.core.db import session_scope

    try:
        settings = _settings()
        with session_scope(settings) as session:
            changed = reencrypt_stored(session, settings)
    except SecretDecryptionError as exc:
        sys.exit(f"herald: {exc}")
    print(f"{changed} stored secrets re-encrypted with the current HERALD_SECRET_KEY",
          file=sys.stderr)


def cmd_results(args: argparse.Namespace) -> None:
    from worker.core.db import session_scope
    from worker.core.models import SendRequest
    from worker.results.answers import messages_response, result_rows, users_response

    with session_scope(_settings()) as session:
        request = session.get(SendRequest, args.request_id)
        if request is None:
            sys.exit(f"herald: no request {args.request_id}")
        rows_read = result_rows(session, request.id)
        respond = users_response if request.kind == "users" else messages_response
        answer = respond(request.app_id, request.id, rows_read, extended=True).to_wire()
    if request.kind == "users":
        rows = [(user, endpoint, r) for user, by_endpoint in answer["Result"].items()
                for endpoint, r in by_endpoint.items()]
    else:
        rows = [("", address, r) for address, r in answer.get("Result", {}).items()]
        rows += [("", endpoint, r) for endpoint, r in answer.get("EndpointResult", {}).items()]
    if args.json:
        # ensure_ascii (the default) escapes every control character, C1 and bidi included.
        print(json.dumps(answer, indent=2))
        return
    print(f"{'USER':20} {'RECIPIENT':28} {'STATUS':18} {'CODE':>4} {'TRIES':>5} FINAL "
          "MESSAGE")
    for user, recipient, r in rows:
        print(f"{printable(user)[:20]:20} {printable(recipient)[:28]:28} "
              f"{r['DeliveryStatus']:18} {r['StatusCode']:>4} {r['Attempts']:>5} "
              f"{'yes' if r['Final'] else 'no':5} "
              f"{printable(r.get('StatusMessage') or '')[:60]}")


def printable(text: str) -> str:
    """``text`` safe for a terminal: ids and messages come from tenants and providers, and an
    escape sequence printed raw can rewrite the screen or the window title. Control and
    format characters (C0, DEL, C1, bidi overrides) are shown escaped, as Python writes them."""
    return "".join(
        char if unicodedata.category(char) not in ("Cc", "Cf") else ascii(char)[1:-1]
        for char in text
    )


def cmd_prune(_args: argparse.Namespace) -> None:
    import time

    from worker.core.db import session_factory
    from worker.delivery import retention

    settings = _settings()
    sessions = session_factory(settings)
    keep_s = settings.result_retention_s
    report = retention.PruneReport()
    for again in (False, True):
        rolled = retention.roll_up_attempts(sessions)
        report.add(retention.prune(sessions, retention_s=keep_s, max_batches=None))
        report.attempts_rolled_up += rolled
        waiting = retention.final_left(sessions, retention_s=keep_s)
        if not waiting or again:
            break
        # Attempts are rolled up to ids seen a settling time ago (worker/delivery/retention.py);
        # on a database no worker has maintained yet, old deliveries wait for that once.
        print(f"{waiting} old deliveries wait for their attempts to be rolled up; again in "
              f"{retention.ROLLUP_SETTLE_S:g} s", file=sys.stderr)
        time.sleep(retention.ROLLUP_SETTLE_S)
    if keep_s <= 0:
        print("HERALD_RESULT_RETENTION_S is 0: results are kept forever, nothing deleted")
        return
    print(f"{report} (final results older than {keep_s} s; "
          f"{report.attempts_rolled_up} attempts rolled up)")
    if waiting:
        print(f"{waiting} old deliveries are still held; another pass deletes them",
              file=sys.stderr)


def cmd_dashboard_link(args: argparse.Namespace) -> None:
    from api.dashboard import SESSION_S, login_link

    try:
        print(login_link(_settings(), args.url, args.ttl))
    except (ValueError, ConfigError) as exc:
        sys.exit(f"herald: {exc}")
    print(f"Valid once, for {args.ttl} s; it signs you in for {SESSION_S // 3600} hours. "
          "Anyone holding it before you use it can sign in.", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="herald", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="API and worker in one process (embedded)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=cmd_serve)

    api = commands.add_parser("api", help="the production API process")
    api.add_argument("--host", default="0.0.0.0")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(func=cmd_api)

    worker = commands.add_parser("worker", help="a production worker process (Celery)")
    worker.add_argument("--concurrency", type=int, default=0)
    worker.add_argument("--loglevel", help="this worker's log level (default HERALD_LOG_LEVEL)")
    worker.add_argument("--hostname", default="herald@%h")
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.set_defaults(func=cmd_migrate)

    keys = commands.add_parser("keys", help="manage access keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="print a new key id and secret")
    create.add_argument("--app", action="append", help="limit the key to this app (repeat)")
    create.add_argument("--description")
    key_commands.add_parser("list", help="list keys (never their secrets)")
    revoke = key_commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    keys.set_defaults(func=cmd_keys)

    reencrypt = commands.add_parser(
        "reencrypt-secrets",
        help="encrypt every stored secret with the current HERALD_SECRET_KEY (after a change)")
    reencrypt.set_defaults(func=cmd_reencrypt_secrets)

    results = commands.add_parser("results", help="a request's per-endpoint outcomes")
    results.add_argument("request_id")
    results.add_argument("--json", action="store_true")
    results.set_defaults(func=cmd_results)

    prune = commands.add_parser(
        "prune", help="delete final results older than HERALD_RESULT_RETENTION_S, now")
    prune.set_defaults(func=cmd_prune)

    link = commands.add_parser("dashboard-link",
                               help="print a signed link that opens the dashboard")
    link.add_argument("--ttl", type=int, default=3600, help="seconds the link stays valid")
    link.add_argument("--url", default="http://127.0.0.1:8080",
                      help="the API's base URL as the browser reaches it")
    link.set_defaults(func=cmd_dashboard_link)

    args = parser.parse_args(argv)
    try:
        level = get_settings().log_level
    except ConfigError:
        level = "INFO"  # the command itself reports the bad configuration
    configure_logging(level)
    args.func(args)


if __name__ == "__main__":
    main()
