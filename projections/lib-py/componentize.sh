#!/usr/bin/env bash
# Builds a Python module into a WebAssembly component of a world of ../../wit:
# componentize.sh <project folder> [world], the world `projection` (the default)
# or `decider`. The component lands in <project folder>/dist/<folder name>.wasm
# ($REEL_MODULE_NAME.wasm when set).
#
# The toolchain (componentize-py, pinned in the project's requirements.txt) is
# installed into <project folder>/.venv on first use, and again whenever
# requirements.txt changes. Python path of the component: the project folder
# (its `app` module) and lib-py (the shared `reel_guest` package), nothing else.
set -euo pipefail

project=$(cd "${1:?usage: componentize.sh <project folder> [world]}" && pwd)
world=${2:-projection}
lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit=$(cd "${REEL_WIT:-$lib/../../wit}" && pwd)
name=${REEL_MODULE_NAME:-$(basename "$project")}
venv="$project/.venv"
python=${PYTHON:-python3}

stamp="$venv/.requirements.sha256"
want=$(sha256sum "$project/requirements.txt" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/componentize-py" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$project/requirements.txt"
    echo "$want" >"$stamp"
fi

mkdir -p "$project/dist"
out="$project/dist/$name.wasm"

# The same sources give the same bytes, so reel's compile cache (keyed by the
# file's hash) hits on a redeploy. componentize-py alone does not: its Wizer
# snapshot keeps what the build machine's random numbers and clock were while
# CPython started (its hash seed, the allocator's state), and no option seeds
# them. So each build is kept under the digest of everything it is made from
# (the files on the component's Python path, the WIT, this script, the pinned
# toolchain), and a build from the same inputs hands back those bytes.
inputs() {
    (cd "$project" && find . -type f -not -path './.venv/*' -not -path './dist/*' -not -path '*/__pycache__/*' \
        -not -path './.git/*' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    (cd "$lib" && find . -type f -not -path './tests/*' -not -path '*/__pycache__/*' -print0 \
        | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    (cd "$wit" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}
digest=$( (echo "world $world"; inputs) | sha256sum | cut -d' ' -f1)
cache="$venv/reel-build-cache"
if [[ -f "$cache/$digest.wasm" ]]; then
    cp "$cache/$digest.wasm" "$out"
    echo "$out ($(stat -c %s "$out") bytes; unchanged since an earlier build, same bytes)"
    exit 0
fi

# A throwaway folder as the "site-packages" componentize-py adds on its own
# (VIRTUAL_ENV's), so the venv's own packages stay out of the component.
empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
mkdir -p "$empty/lib/python3/site-packages"
cd "$project"
VIRTUAL_ENV="$empty" "$venv/bin/componentize-py" --quiet -d "$wit" -w "$world" \
    componentize app -p "$project" -p "$lib" -o "$out"
# Keep it, with the 4 newest others (a component is ~18 MB).
mkdir -p "$cache"
cp "$out" "$cache/$digest.wasm"
ls -t "$cache"/*.wasm | tail -n +6 | xargs -r rm -f
echo "$out ($(stat -c %s "$out") bytes)"
