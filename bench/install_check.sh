#!/usr/bin/env bash
# Tries every `pip install` line of the README's code blocks as written, each in a fresh venv, from a copy of
# this checkout's HEAD (git archive: edits made while it runs do not disturb it), then the main job (and the extra's own job for the server and Ray lines) with what that line
# installed. Slow (a fresh torch each time; pip's cache helps): run on demand, not in CI.
# Usage: bash bench/install_check.sh [WORKDIR]   (default: a temporary folder, removed at the end)
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$(mktemp -d)}"
py="${PYTHON:-python3}"
mkdir -p "$work/src" && git -C "$repo" archive HEAD | tar -x -C "$work/src"
repo="$work/src"
mapfile -t lines < <(awk '/^```/{code=!code; next} code && /^pip install/' "$repo/README.md" | sed 's/ *#.*$//' | sort -u)
status=0
for i in "${!lines[@]}"; do
  line="${lines[$i]}"
  venv="$work/venv$i"
  rm -rf "$venv" && "$py" -m venv "$venv"
  echo "== $line"
  start=$SECONDS
  if ! (cd "$repo" && PATH="$venv/bin:$PATH" bash -c "$line" >"$work/install$i.log" 2>&1); then
    echo "   FAILED to install ($((SECONDS - start)) s): tail of $work/install$i.log"; tail -5 "$work/install$i.log"
    status=1; continue
  fi
  echo "   installed in $((SECONDS - start)) s"
  run() {  # run a check with this venv; print its first output line or its error
    local name="$1"; shift
    if out=$(cd "$repo" && PATH="$venv/bin:$PATH" HF_HUB_OFFLINE=1 timeout 300 "$@" 2>"$work/err$i.log"); then
      echo "   ok   $name: $(echo "$out" | head -1 | cut -c1-100)"
    else
      echo "   FAIL $name: $(tail -1 "$work/err$i.log" | cut -c1-200)"; status=1
    fi
  }
  run "w2vlm --version" w2vlm --version
  run "transcribe" w2vlm transcribe examples/children.wav -q
  case "$line" in
    *server*)
      port=$((18000 + i))
      (cd "$repo" && PATH="$venv/bin:$PATH" HF_HUB_OFFLINE=1 w2vlm serve --port $port >"$work/serve$i.log" 2>&1 &
       echo $! >"$work/serve$i.pid")
      for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 1; done
      run "serve + POST" curl -sf -F file=@examples/children.wav -F model=whisper-1 \
          "http://127.0.0.1:$port/v1/audio/transcriptions"
      kill "$(cat "$work/serve$i.pid")" 2>/dev/null; pkill -f "w2vlm serve --port $port" 2>/dev/null ;;
  esac
  case "$line" in
    *ray*|*\[ray\]*) run "transcribe --ray" w2vlm transcribe examples/ --ray -o "$work/ray$i" -q ;;
  esac
done
[ -z "${1:-}" ] && rm -rf "$work"
exit $status
