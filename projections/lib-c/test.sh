#!/usr/bin/env bash
# Native unit tests of the JSON reader and the number/string formatting.
set -euo pipefail
lib=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
${CC:-cc} -std=c11 -O2 -ffp-contract=off -Wall -Wextra -Wno-missing-field-initializers -Werror -I"$lib" \
    "$lib/reel_str.c" "$lib/reel_json.c" "$lib/tests/test_lib.c" -lm -o "$out/test_lib"
"$out/test_lib"
