#!/usr/bin/env bash
# Builds dist/{{name}}.wasm (installs componentize-py into .venv the first time).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
REEL_WIT="$here/wit" REEL_MODULE_NAME="{{name}}" exec bash "$here/lib-py/componentize.sh" "$here"
