"""The allocator set-up of the commands (w2vlm.memory.tune_allocator), each case in a fresh process: the setting
is process-wide."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

# features of the embedded model's layout for 20 s of audio, ten times; the median of the page faults per audio
# second over the last eight passes (the first ones size the heap; the median leaves out the odd pass in which the
# system reclaimed pages)
_PROBE = """
import json, resource, sys
import numpy as np, torch
from w2vlm.memory import tune_allocator
from w2vlm.model import resolve_model_path
from w2vlm.processor_parts import load_feature_extractor
from w2vlm.features import fast_log_mel
tuned = tune_allocator()
torch.set_num_threads(1)
fbank = fast_log_mel(load_feature_extractor(resolve_model_path(None)))
rng = np.random.default_rng(0)
clips = [torch.from_numpy(rng.standard_normal(16000 * s).astype(np.float32)) for s in (3, 9, 5, 2, 1)]
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for clip in clips:
        fbank.single(clip)
    faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
print(json.dumps({"tuned": tuned, "faults_per_s": float(np.median(faults[2:]))}))
"""


def _probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD")} | env
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=environ, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_tuned_allocator_reuses_the_features_buffers() -> None:
    """Tuned, the feature extraction's large short-lived buffers come back from the heap: no fresh pages per
    window (glibc's defaults: ~180 page faults per audio second in this probe, ~37 in the engine's mix of work,
    ~1/6 of the CPU side's time)."""
    tuned = _probe()
    assert tuned["tuned"] is True
    assert tuned["faults_per_s"] < 2.0


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_an_allocator_set_by_the_user_is_left_alone() -> None:
    assert _probe(GLIBC_TUNABLES="glibc.malloc.check=0")["tuned"] is False
    assert _probe(MALLOC_TRIM_THRESHOLD_="1000000")["tuned"] is False
