#!/usr/bin/env bash
# Machine packages the tests and the demo use beside Python: PostGIS for the pgstac store (next to
# the machine's PostgreSQL, started when down), Chromium for the stac-browser test, and the
# stac-browser build (Node.js + npm). Installs with apt-get only when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system_deps.sh: please install $* (needs root and apt-get)" >&2
    return 0
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_version="$(ls /etc/postgresql | sort -n | tail -n 1)"
  dpkg -s "postgresql-${pg_version}-postgis-3" >/dev/null 2>&1 \
    || apt_install "postgresql-${pg_version}-postgis-3"
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "${pg_version}" main start || true
  fi
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

command -v chromium >/dev/null 2>&1 || apt_install chromium

if command -v npm >/dev/null 2>&1; then
  scripts/build_browser.sh
else
  echo "system_deps.sh: npm not found; stac-browser is not built (/browser/ will be absent)" >&2
fi
