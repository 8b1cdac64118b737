#!/usr/bin/env bash
# Build the native core with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option W2VLM_SANITIZE) in its own
# virtual environment (.venv-asan: the build tools, the core's dependencies and the test tools, w2vlm editable) and run the C++-facing tests and a short
# fuzz run under it. Extra arguments go to pytest; W2VLM_FUZZ_SECONDS sets the fuzz time per target.
#
#   tools/sanitize.sh                    # build + tests
#   W2VLM_FUZZ_SECONDS=300 tools/sanitize.sh tests/test_fuzz.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-asan/bin/python ]; then
  "$PY" -m venv .venv-asan
  .venv-asan/bin/pip install -q -c constraints.txt scikit-build-core nanobind numpy typer rich pytest hypothesis \
    soundfile soxr av kenlm
fi
CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-2} .venv-asan/bin/pip install -q --no-deps --no-build-isolation -e . \
  -C cmake.define.W2VLM_SANITIZE=ON -C build-dir=build/asan
# Python itself is not instrumented: the sanitizer runtimes must be loaded first
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
tests=(tests/test_ngram.py tests/test_kenlm_binary.py tests/test_ngram_binary.py tests/test_arpa_stream.py tests/test_decoder.py
  tests/test_hardening.py tests/test_fuzz.py tests/test_lstm_kernel.py)
if [ $# -gt 0 ]; then tests=("$@"); fi
exec .venv-asan/bin/python -m pytest -q -p no:cacheprovider "${tests[@]}"
