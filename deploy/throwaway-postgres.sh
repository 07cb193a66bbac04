#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests: trust authentication, 127.0.0.1 only, data under DIR.
#
#   throwaway-postgres.sh start DIR PORT   # prints the database URL
#   throwaway-postgres.sh stop DIR
#
# `start` on a DIR that already holds a cluster (one stopped earlier) starts that cluster again,
# with its databases, instead of creating one: stop + start is a server restart.
#
# initdb refuses to run as root, so as root every server command runs as the `postgres` user, and
# DIR must then be reachable by that user (e.g. a fresh directory directly under /tmp).
set -euo pipefail
cmd=$1
dir=$2
bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "throwaway-postgres: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $cmd in
  start)
    port=$3
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    fresh=1
    if [ -f "$dir/data/PG_VERSION" ]; then fresh=0; fi
    if [ $fresh = 1 ]; then
      as_postgres "$bin/initdb" --pgdata="$dir/data" --auth=trust --username=postgres --no-sync >/dev/null
    fi
    # fsync off: a test cluster that never has to survive a crash starts and writes faster.
    as_postgres "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    if [ $fresh = 1 ]; then
      as_postgres "$bin/createdb" --host=127.0.0.1 --port="$port" --username=postgres dagster
    fi
    echo "postgresql://postgres@127.0.0.1:$port/dagster"
    ;;
  stop)
    as_postgres "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null
    ;;
  *)
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
