"""A short seeded fuzz run of every reader and decoder entry point (tests/fuzz/fuzz.py), and a check that the
harness itself reports crashes, hangs and wrong exception types.

Longer runs: ``W2VLM_FUZZ_SECONDS=600 pytest tests/test_fuzz.py`` (seconds per target), or run the script."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))

import fuzz

SECONDS = float(os.environ.get("W2VLM_FUZZ_SECONDS", "5"))
SEED = int(os.environ.get("W2VLM_FUZZ_SEED", "20261204"))


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_fuzz_target_has_no_findings(target, tmp_path):
    if target == "audio":
        pytest.importorskip("soundfile")
        pytest.importorskip("av")
    report = fuzz.run_target(
        target,
        SEED,
        cases=10**9,
        seconds=SECONDS,
        timeout=60.0,
        max_rss_mb=512.0,
        out_dir=tmp_path,
        memory_limit_mb=4096.0,
    )
    assert report.cases > 0
    assert not report.findings, f"{target}: {report.findings[:10]} (inputs in {tmp_path})"


def test_harness_reports_crashes_hangs_and_wrong_exceptions(tmp_path):
    report = fuzz.run_target(
        "selftest", 0, cases=24, seconds=300, timeout=5.0, max_rss_mb=512.0, out_dir=tmp_path, memory_limit_mb=0
    )
    kinds = " ".join(report.findings)
    assert "killed by signal" in kinds  # SIGSEGV, or SIGABRT under the sanitizers
    assert "hang" in kinds
    assert "builtins.TypeError" in kinds
    assert len(list(tmp_path.iterdir())) == len(report.findings)
    # cases after a crash still run: all but the crashed and hung ones complete
    assert report.cases == 24 - sum("signal" in f or "hang" in f for f in report.findings)
