#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis the tests use are up on 127.0.0.1, starting them if they
# are installed but stopped. Fails with a clear message when one is missing.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started (Debian: apt-get install postgresql)" >&2; exit 1; }
fi

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    echo "starting Redis (loopback only, nothing persisted)" >&2
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  fi
  redis_up || { echo "Redis is not reachable on 127.0.0.1:6379 and could not be started (Debian: apt-get install redis-server)" >&2; exit 1; }
fi
rabbit_up() { timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; }

if ! rabbit_up; then
  if command -v rabbitmq-server >/dev/null; then
    echo "starting RabbitMQ" >&2
    rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
  fi
  rabbit_up || { echo "RabbitMQ is not reachable on 127.0.0.1:5672 and could not be started (Debian: apt-get install rabbitmq-server)" >&2; exit 1; }
fi
# rabbitmqctl answers only once the node has fully booted (the tests create vhosts with it).
timeout 60 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
echo "PostgreSQL, Redis and RabbitMQ are up" >&2
