#!/usr/bin/env bash
# Builds dist/{{name}}.wasm; the toolchain is in lib-c/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
REEL_WIT="$here/wit" REEL_MODULE_NAME="{{name}}" exec bash "$here/lib-c/build-component.sh" "$here" app.c
