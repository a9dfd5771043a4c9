#!/usr/bin/env bash
# Builds dist/<this folder's name>.wasm, a decider; see ../lib-py/componentize.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../lib-py/componentize.sh" "$here" decider
