#!/usr/bin/env bash
# Builds dist/order-summaries-c.wasm; see README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../lib-c/build-component.sh" "$here" order_summaries.c
