#!/usr/bin/env bash
# Builds dist/customer-stats-c.wasm; see README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../lib-c/build-component.sh" "$here" customer_stats.c
