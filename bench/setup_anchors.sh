#!/usr/bin/env bash
# Creates bench/.venv-anchors with the anchor decoders that bench/decoder.py compares w2vlm against:
# pyctcdecode (needs numpy<2), the kenlm Python module (built from source by pip), ctc-beam-decoder and
# flashlight-text. None of these are dependencies of w2vlm; they live only in this venv.
# Usage: bash bench/setup_anchors.sh   (re-running is cheap: pip skips what is installed)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-anchors"
py="${PYTHON:-python3}"

# kenlm builds from source: it needs a C++ compiler, cmake, and the zlib/bz2/lzma headers (boost is optional
# for the Python module). Install what is missing when we are root on Debian; otherwise just report.
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
for hdr in zlib.h bzlib.h lzma.h; do
  [ -e "/usr/include/$hdr" ] || case $hdr in
    zlib.h) need+=(zlib1g-dev) ;; bzlib.h) need+=(libbz2-dev) ;; lzma.h) need+=(liblzma-dev) ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing build packages: ${need[*]}"
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
  else
    echo "missing build tools for kenlm: ${need[*]} (install them, then re-run)" >&2
  fi
fi

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip wheel setuptools
"$venv/bin/python" -m pip install -q "numpy<2" "pyctcdecode" "kenlm" "ctc-beam-decoder" "flashlight-text"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("numpy", "pyctcdecode", "kenlm", "ctc-beam-decoder", "flashlight-text"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: NOT INSTALLED")
import kenlm, pyctcdecode  # noqa: E401,F401  (import check)
PY
