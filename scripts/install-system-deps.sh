#!/usr/bin/env bash
# Installs what the integration tests run, from Debian packages, when missing: the real Prometheus 2.42 /
# Alertmanager 0.25, the PostgreSQL server (initdb, postgres) of the fleet audit store tests, Chromium, and
# poppler-utils.
set -euo pipefail
missing=()
packages=()
for bin in prometheus promtool prometheus-alertmanager amtool; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
[ ${#missing[@]} -eq 0 ] || packages+=(prometheus prometheus-alertmanager)
# The server binaries live outside PATH, in /usr/lib/postgresql/<major>/bin (harness/postgres.py looks there).
if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgres initdb)
  packages+=(postgresql)
fi
# Headless Chromium loads the status page in tests/integration/test_status_page.py.
if ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium)
  packages+=(chromium)
fi
# poppler-utils: the compliance report's PDF is rendered to PNG pages (pdftoppm) and text (pdftotext) in its tests.
for bin in pdftoppm pdftotext; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    missing+=("$bin")
    packages+=(poppler-utils)
    break
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing ${missing[*]}: install the Debian packages ${packages[*]}" >&2
  exit 1
fi
echo "installing ${packages[*]} (missing: ${missing[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
