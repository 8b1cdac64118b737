#!/usr/bin/env bash
# Data generation + training of the embedded model on a machine with a GPU and 16 cores, in one go or in
# slices (a lent machine runs a command for at most 10 minutes): call it again with the same WORK and it
# skips the synthesis that is already there and resumes training from the checkpoint, on one schedule.
#
# Needs: python3 with torch, transformers, scipy, numpy, rich, typer; the corpus files in $CORPUS
# (speech_train.txt, dev.txt; made by corpus.py); espeak-ng either installed or as .deb files in $DEBS
# (unpacked with dpkg -x, no root install needed).
#
# Settings (environment): N_TRAIN utterances to synthesize, N_DEV dev utterances, TIME_LIMIT training
# seconds in all (the learning-rate schedule follows it), STOP_AFTER seconds of training in this call (unset:
# run to TIME_LIMIT), PRESET (default medium), BATCH_SECONDS, LR, WARMUP, WORK (scratch folder), MODEL_OUT
# (where the model folder goes), EXTRA_TRAIN_ARGS, and BUNDLE (a folder: if set, the model is packed there as
# a tar of small files + <=15 MB parts, after every call).
set -euo pipefail
export PYTHONUNBUFFERED=1
CORPUS=${CORPUS:-.data/corpus}
DEBS=${DEBS:-}
N_TRAIN=${N_TRAIN:-30000}
N_DEV=${N_DEV:-300}
TIME_LIMIT=${TIME_LIMIT:-420}
BATCH_SECONDS=${BATCH_SECONDS:-320}
LR=${LR:-1e-3}
WARMUP=${WARMUP:-500}
WORK=${WORK:-/tmp/w2vlm-embedded}
MODEL_OUT=${MODEL_OUT:-$WORK/model}
WORKERS=${WORKERS:-$(nproc)}
PRESET=${PRESET:-medium}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}

ESPEAK_ARGS=()
if [ -n "$DEBS" ]; then
  mkdir -p "$WORK/espeak"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$WORK/espeak"; done
  ESPEAK_ARGS=(--espeak "$WORK/espeak")
fi

t0=$(date +%s)
if [ -s "$WORK/train/manifest.jsonl" ] && [ -s "$WORK/dev/manifest.jsonl" ]; then
  echo "synthesis: $WORK/train and $WORK/dev are there already"
else
  python3 recipes/embedded/synth.py "${ESPEAK_ARGS[@]}" --sentences "$CORPUS/speech_train.txt" \
    --out "$WORK/train" --count "$N_TRAIN" --voices train --seed 0 --workers "$WORKERS"
  python3 recipes/embedded/synth.py "${ESPEAK_ARGS[@]}" --sentences "$CORPUS/dev.txt" \
    --out "$WORK/dev" --count "$N_DEV" --voices test --seed 1 --workers "$WORKERS"
fi
t1=$(date +%s)
echo "synthesis took $((t1 - t0)) s"

# shellcheck disable=SC2086
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} python3 -m w2vlm.cli train "$WORK/train/manifest.jsonl" \
  -o "$MODEL_OUT" --dev "$WORK/dev/manifest.jsonl" --epochs 1000 --time-limit "$TIME_LIMIT" \
  --preset "$PRESET" --batch-seconds "$BATCH_SECONDS" --lr "$LR" --warmup "$WARMUP" --save-every 500 --resume \
  ${STOP_AFTER:+--stop-after "$STOP_AFTER"} $EXTRA_TRAIN_ARGS
t2=$(date +%s)
echo "training took $((t2 - t1)) s"

if [ -n "${BUNDLE:-}" ]; then
  mkdir -p "$BUNDLE"
  tar -C "$MODEL_OUT" -cf "$BUNDLE/model_meta.tar" --exclude model.safetensors .
  split -b 15000000 -d "$MODEL_OUT/model.safetensors" "$BUNDLE/model.safetensors.part"
  (cd "$MODEL_OUT" && sha256sum model.safetensors) > "$BUNDLE/model.sha256"
  ls -la "$BUNDLE"
fi
