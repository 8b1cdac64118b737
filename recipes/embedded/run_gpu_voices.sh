#!/usr/bin/env bash
# One-call continuation of the embedded model on more voices (issue 34), on a lent GPU machine (16 cores):
# installs the carried wheels, builds w2vlm, unpacks espeak-ng, synthesizes espeak-ng speech and makes
# augmented copies of the carried real and synthetic clips on all cores, trains from the embedded model
# (bf16 on CUDA) until a wall-clock deadline, evaluates the result on the real dev sets and the synthetic
# test set, and leaves in $OUT (6 files, none over 16 MiB):
#   model_meta.tar  model.safetensors.part00  model.safetensors.part01  model.sha256  results.json  run.log
# Reassemble: mkdir M && tar -xf model_meta.tar -C M && cat model.safetensors.part* > M/model.safetensors
#             && (cd M && sha256sum -c ../model.sha256)
#
# Needs .voices-kit/ (recipes/embedded/kit.py build) in the repository root. Run from the repository root:
#   bash recipes/embedded/run_gpu_voices.sh
# Settings (environment): DEADLINE seconds from the start by which everything is done (default 450),
# TRAIN_SECONDS (default: whatever DEADLINE leaves after data preparation minus RESERVE, 120 s), N_ESPEAK
# espeak-ng training utterances (20000), COPIES_FSDD / COPIES_ASTERISK / COPIES_SYNTH augmented copies per
# clip (6 / 8 / 3: real speech up-weighted), AUG_LIMIT (use only this many clips of each carried set; dry
# runs), N_TEST synthetic test utterances (500), BATCH_SECONDS (600), LR (5e-4), WARMUP (150), DEVICE
# (auto), SKIP_INSTALL=1 (use the python environment as it is: CPU dry runs), KIT, WORK, OUT, PYTHON.
set -uo pipefail
T0=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
KIT=${KIT:-.voices-kit}
WORK=${WORK:-/tmp/w2vlm-voices}
OUT=${OUT:-/tmp/out}
PYTHON=${PYTHON:-python3}
DEADLINE=${DEADLINE:-450}
RESERVE=${RESERVE:-120}
N_ESPEAK=${N_ESPEAK:-20000}
N_TEST=${N_TEST:-500}
COPIES_FSDD=${COPIES_FSDD:-6}
COPIES_ASTERISK=${COPIES_ASTERISK:-8}
COPIES_SYNTH=${COPIES_SYNTH:-3}
AUG_LIMIT=${AUG_LIMIT:-0}
BATCH_SECONDS=${BATCH_SECONDS:-600}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-150}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-$(nproc)}
mkdir -p "$OUT" "$WORK"
exec > >(tee -a "$OUT/run.log") 2>&1
since() { echo "[$(($(date +%s) - T0)) s] $*"; }

since "start: $(nproc) cores; $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo no GPU)"
[ -f "$KIT/kit.json" ] || { echo "no $KIT/kit.json: build the kit first (recipes/embedded/kit.py build)"; exit 2; }
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$KIT"/whl/*.whl || exit 1
  export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation . > "$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; exit 1; }
  since "wheels installed, w2vlm built"
fi
# the installed w2vlm (with its compiled decoder) must be the one imported: no PYTHONPATH=src here
(cd /tmp && "$PYTHON" -c "import soundfile, w2vlm._core, w2vlm.train; print('w2vlm from', w2vlm.__file__)") || exit 1
mkdir -p "$WORK/espeak"
for f in "$KIT"/debs/*.deb; do dpkg -x "$f" "$WORK/espeak"; done
since "espeak-ng unpacked"

# ---- data: the carried sets cut into clips; espeak-ng synthesis and augmentation side by side, on all cores
R=recipes/embedded
pids=()
for m in "$KIT"/train/*.jsonl; do
  "$PYTHON" $R/voices.py unpack "$m" --out "$WORK/unpacked/$(basename "$m" .jsonl)" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done  # (a bare wait would also wait for the tee of the log)
since "carried sets unpacked"
AUG_WORKERS=$(( WORKERS / 2 > 0 ? WORKERS / 2 : 1 ))
ESPEAK_WORKERS=$(( WORKERS - AUG_WORKERS > 0 ? WORKERS - AUG_WORKERS : 1 ))
U=$WORK/unpacked
aug_inputs=(--input "$U/fsdd_train/manifest.jsonl:$COPIES_FSDD" --input "$U/asterisk_train/manifest.jsonl:$COPIES_ASTERISK")
for s in flite festival piper; do
  [ -f "$U/$s/manifest.jsonl" ] && aug_inputs+=(--input "$U/$s/manifest.jsonl:$COPIES_SYNTH")
done
"$PYTHON" $R/voices.py augment "${aug_inputs[@]}" --keep-clean --limit "$AUG_LIMIT" --out "$WORK/aug" \
  --seed 34 --workers "$AUG_WORKERS" > "$WORK/augment.log" 2>&1 &
AUG_PID=$!
"$PYTHON" $R/synth.py --espeak "$WORK/espeak" --sentences "$KIT/text/speech.txt" --out "$WORK/espeak_train" \
  --count "$N_ESPEAK" --max-words 16 --voices train --seed 34 --workers "$ESPEAK_WORKERS" || exit 1
since "espeak-ng training speech made"
"$PYTHON" $R/synth.py --espeak "$WORK/espeak" --sentences "$KIT/text/test.txt" --out "$WORK/synth_test" \
  --count "$N_TEST" --voices test --seed 2 --workers "$ESPEAK_WORKERS" || exit 1
since "synthetic test set made (the recipe's: test.txt, held-out voices, seed 2)"
wait "$AUG_PID" || { cat "$WORK/augment.log"; exit 1; }
tail -3 "$WORK/augment.log"
since "augmented copies made"

# ---- manifests: training = espeak-ng + augmented copies; no dev clip may be in it (voices.py merge checks ids)
devs=()
for s in fsdd_dev asterisk_dev pocketsphinx_dev; do devs+=("$KIT/dev/$s.jsonl"); done
excl=(); for d in "${devs[@]}"; do excl+=(--exclude "$d"); done
"$PYTHON" $R/voices.py merge "$WORK/espeak_train/manifest.jsonl" "$WORK/aug/manifest.jsonl" "${excl[@]}" \
  --out "$WORK/train.jsonl" || exit 1
"$PYTHON" $R/voices.py merge "${devs[@]}" --out "$WORK/real_dev.jsonl" || exit 1
for d in "${devs[@]}"; do "$PYTHON" $R/voices.py merge "$d" --out "$WORK/$(basename "$d")" > /dev/null || exit 1; done

# ---- training until the deadline leaves RESERVE seconds for saving, evaluation and packing
NOW=$(( $(date +%s) - T0 ))
TRAIN_SECONDS=${TRAIN_SECONDS:-$(( DEADLINE - NOW - RESERVE ))}
[ "$TRAIN_SECONDS" -ge 20 ] || TRAIN_SECONDS=20
since "training for $TRAIN_SECONDS s"
"$PYTHON" -m w2vlm.cli train "$WORK/train.jsonl" -o "$WORK/model" \
  --init-from src/w2vlm/assets/model --lm src/w2vlm/assets/model/language_model --dev "$WORK/real_dev.jsonl" \
  --epochs 1000 --time-limit "$TRAIN_SECONDS" --batch-seconds "$BATCH_SECONDS" --lr "$LR" --warmup "$WARMUP" \
  --save-every 0 --max-duration 20 --no-sortagrad --seed 34 --device "$DEVICE" --quiet || exit 1
since "trained"

"$PYTHON" $R/voices.py describe --model "$WORK/model" --train "$WORK/train.jsonl" --kit "$KIT" "${excl[@]}" \
  || since "could not record the training data in training_info.json"

# ---- pack the model first (so that it comes back whatever happens next)
tar -C "$WORK/model" -cf "$OUT/model_meta.tar" --exclude model.safetensors .
split -b 15000000 -d "$WORK/model/model.safetensors" "$OUT/model.safetensors.part"
(cd "$WORK/model" && sha256sum model.safetensors) > "$OUT/model.sha256"
since "model packed"

# ---- evaluation (recipes/embedded/evaluate.py: greedy and beam + LM, on the CPU cores): the real dev sets
# first, then the recipe's synthetic test set; each only while time is left
for s in fsdd_dev asterisk_dev pocketsphinx_dev synth_test; do
  m=$WORK/$s.jsonl; [ "$s" = synth_test ] && m=$WORK/synth_test/manifest.jsonl
  LEFT=$(( DEADLINE + 30 - ($(date +%s) - T0) ))
  if [ "$LEFT" -lt 10 ]; then since "no time left to evaluate $s"; continue; fi
  timeout "$LEFT" "$PYTHON" $R/evaluate.py --model "$WORK/model" \
    --manifest "$m" --json "$WORK/eval_$s.json" | grep -v "^  " || since "evaluation of $s did not finish"
done
"$PYTHON" - "$WORK" "$OUT/results.json" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
info = json.loads((work / "model" / "training_info.json").read_text())
out = {"sets": {}, "training": {k: info.get(k) for k in ("steps", "train_seconds", "train_audio_hours", "device",
                                                          "autocast", "history")}}
for p in sorted(work.glob("eval_*.json")):
    out["sets"][p.stem[5:]] = json.loads(p.read_text())
Path(sys.argv[2]).write_text(json.dumps(out, indent=2) + "\n")
for name, r in out["sets"].items():
    lm = r.get("lm", {})
    print(f"{name:<18} greedy WER {100 * r['greedy']['wer']:6.2f}%  beam+LM WER {100 * lm.get('wer', float('nan')):6.2f}%")
PY
since "done"
ls -la "$OUT"
