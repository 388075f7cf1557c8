#!/usr/bin/env bash
# Installs the real Prometheus 2.42 / Alertmanager 0.25 the integration tests run (Debian packages), when missing.
set -euo pipefail
missing=()
for bin in prometheus promtool prometheus-alertmanager amtool; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing ${missing[*]}: install the Debian packages prometheus and prometheus-alertmanager" >&2
  exit 1
fi
echo "installing prometheus prometheus-alertmanager (missing: ${missing[*]})" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
