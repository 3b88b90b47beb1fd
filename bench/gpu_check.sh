#!/usr/bin/env bash
# Issue 13's GPU check in one command: bench/GPU.md says how to run it on the device machine.
#
#   bench/gpu_check.sh [OUT_DIR] [options of python -m bench.gpu, e.g. --graph]
#
# OUT_DIR defaults to $OUT (the device machine's folder that comes back), else bench/results.
# Setup, each step of which says what it did and never stops the run:
#   - the Python packages xpnn needs and the device image lacks (array-api-compat,
#     array-api-strict; tqdm is there) are installed from the wheels in .gpu_wheels/ into
#     /tmp/gpu_site, put first on PYTHONPATH (nothing is installed into the image's site-packages);
#   - MNIST is read from .gpu_data/mnist (a copy of ../shared/data/mnist carried with the call);
#     where ../shared does not exist at all (the device machine), ../shared/data/mnist is made a
#     link to it, so the tests that read real MNIST run there too.
# Then python -m bench.gpu runs the steps (pytest, compute-sanitizer, CPU/GPU parity, no host sync,
# the benchmark, the captured step with --graph), each in its own process with a time limit, a
# failure printed in full without stopping the rest, "SKIPPED: <reason>" where a tool or the GPU is
# absent. Without a GPU it is a dry run (about 20 s here). Exit status: 1 if any step failed.
set -u
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    out="$1"
    shift
fi
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
: > "$out/setup.log"
note() { echo "$*"; echo "$*" >> "$out/setup.log"; }

note "== setup ($(date -u +%FT%TZ), $(uname -m), $("$py" --version 2>&1), repo $(pwd))"
missing=$("$py" -c 'import importlib.util as u; print(" ".join(m for m in ("array_api_compat", "array_api_strict", "tqdm") if u.find_spec(m) is None))')
if [ -z "$missing" ]; then
    note "python packages: array_api_compat, array_api_strict and tqdm already importable"
elif ls .gpu_wheels/*.whl >/dev/null 2>&1; then
    note "python packages missing: $missing; installing .gpu_wheels/*.whl into /tmp/gpu_site"
    if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_site .gpu_wheels/*.whl 2>&1 | tee -a "$out/setup.log"; then
        export PYTHONPATH="/tmp/gpu_site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    still=$("$py" -c 'import importlib.util as u; print(" ".join(m for m in ("array_api_compat", "array_api_strict", "tqdm") if u.find_spec(m) is None))')
    note "python packages still missing: ${still:-none}"
else
    note "python packages missing: $missing, and no wheels in .gpu_wheels/ (bench/GPU.md says how to carry them)"
fi
if [ -f .gpu_data/mnist/train-images-idx3-ubyte.gz ]; then
    note "MNIST: .gpu_data/mnist"
    if [ ! -e ../shared ]; then
        if mkdir -p ../shared/data && ln -s "$(pwd)/.gpu_data/mnist" ../shared/data/mnist; then
            note "MNIST: linked ../shared/data/mnist -> .gpu_data/mnist, so the tests that read real MNIST run"
        else
            note "MNIST: could not link ../shared/data/mnist; the tests that read real MNIST will skip"
        fi
    fi
else
    note "MNIST: no .gpu_data/mnist (copy ../shared/data/mnist there before the call); the default data folder is used"
fi
"$py" -m bench.gpu --out "$out" "$@"
