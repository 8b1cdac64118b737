"""Run pyctcdecode's own test files, unchanged, against w2vlm's decoder.

pyctcdecode's source is not part of this repository: point ``--src`` at a checkout or an extracted release of it
(the folder that holds ``pyctcdecode/tests/``, or the ``pyctcdecode`` package folder itself). Nothing is
downloaded. The script builds, in a temporary folder, a package named ``pyctcdecode`` whose modules only re-export
w2vlm's objects (``w2vlm.decoder``), copies the test folder beside them (sample data included) and runs pytest
there, with w2vlm taking every ``pyctcdecode`` import. It prints one line per test and a summary:

    python bench/dropin/pyctcdecode_suite.py --src /path/to/pyctcdecode-0.5.0

The test modules import a few of pyctcdecode's private helpers (``_merge_beams``, ``_prune_history``, its
``HotwordScorer`` and so on: pieces of a pure-Python search that w2vlm does natively). The shim defines them as
stubs that raise ``NotImplementedError``, so that the modules import; the tests of those helpers are reported apart,
as "internal", and are not counted in the public-API figure. A test that fails only at the assertion that the given
``multiprocessing`` pool was used is reported as "pool": w2vlm decodes a batch on native threads instead.
``test_notebooks.py`` (runs pyctcdecode's tutorial notebooks) is not run. The test files need ``kenlm``,
``hypothesis`` and ``pygtrie`` (``pip install pygtrie``) importable, as pyctcdecode's own run does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

# Tests of pyctcdecode's private helpers: they exercise its pure-Python search, which w2vlm does not have.
INTERNAL = {
    "test_decoder.py::TestDecoderHelpers::test_normalize_whitespace",
    "test_decoder.py::TestDecoderHelpers::test_sum_log_scores",
    "test_decoder.py::TestDecoderHelpers::test_sort_and_trim_beams",
    "test_decoder.py::TestDecoderHelpers::test_merge_beams",
    "test_decoder.py::TestDecoderHelpers::test_prune_history",
    "test_language_model.py::TestLanguageModel::test_match_ptn",
    "test_language_model.py::TestLanguageModel::test_trie",
    "test_language_model.py::TestHotwordScorer::test_fuzz_HotwordScorer",
}
# The assertion a test may fail at and still count as the one accepted difference.
POOL_ASSERTION = "pool.map_has_run"
SKIPPED_FILES = ("test_notebooks.py",)

SHIM = {
    "__init__.py": """
        from w2vlm.decoder import Alphabet, BeamSearchDecoderCTC, LanguageModel, build_ctcdecoder

        __all__ = ["Alphabet", "BeamSearchDecoderCTC", "LanguageModel", "build_ctcdecoder"]
    """,
    "alphabet.py": """
        from w2vlm.decoder.alphabet import (
            BPE_TOKEN,
            UNK_BPE_TOKEN,
            UNK_TOKEN,
            Alphabet,
            normalize_bpe_labels as _normalize_bpe_alphabet,
            normalize_regular_labels as _normalize_regular_alphabet,
            verify_alphabet_coverage,
        )
    """,
    "constants.py": """
        from w2vlm.defaults import *  # noqa: F403
        from w2vlm.defaults import (
            DEFAULT_ALPHA,
            DEFAULT_BEAM_WIDTH,
            DEFAULT_BETA,
            DEFAULT_HOTWORD_WEIGHT,
            DEFAULT_MIN_TOKEN_LOGP,
            DEFAULT_PRUNE_LOGP,
            DEFAULT_SCORE_BOUNDARY as DEFAULT_SCORE_LM_BOUNDARY,
            DEFAULT_UNK_SCORE_OFFSET as DEFAULT_UNK_LOGP_OFFSET,
        )
    """,
    "decoder.py": """
        from w2vlm.decoder import BeamSearchDecoderCTC, build_ctcdecoder
        from pyctcdecode._internal import (
            _merge_beams,
            _normalize_whitespace,
            _prune_history,
            _sort_and_trim_beams,
            _sum_log_scores,
        )
    """,
    "language_model.py": """
        from w2vlm.decoder import LanguageModel, MultiLanguageModel
        from pyctcdecode._internal import HotwordScorer
    """,
    "_internal.py": """
        # pyctcdecode's private helpers of its pure-Python search: w2vlm searches natively and has none of them.
        def _missing(*args, **kwargs):
            raise NotImplementedError("a pyctcdecode internal helper: w2vlm searches natively")

        _merge_beams = _normalize_whitespace = _prune_history = _sort_and_trim_beams = _sum_log_scores = _missing


        class HotwordScorer:
            def __init__(self, *args, **kwargs):
                _missing()

            @classmethod
            def build_scorer(cls, *args, **kwargs):
                _missing()
    """,
}


def find_tests(src: Path) -> Path:
    for cand in (src / "pyctcdecode" / "tests", src / "tests"):
        if (cand / "test_decoder.py").is_file():
            return cand
    raise SystemExit(f"error: no pyctcdecode tests under {src} (expected pyctcdecode/tests/test_decoder.py)")


def build_tree(tests: Path, root: Path) -> Path:
    pkg = root / "pyctcdecode"
    pkg.mkdir()
    for name, body in SHIM.items():
        (pkg / name).write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    shutil.copytree(tests, pkg / "tests", ignore=shutil.ignore_patterns("__pycache__", *SKIPPED_FILES))
    return pkg / "tests"


def classify(case: ET.Element) -> tuple[str, str]:
    """(outcome, detail) of one junit test case."""
    for tag in ("failure", "error"):
        el = case.find(tag)
        if el is not None:
            text = (el.text or "") + (el.get("message") or "")
            if tag == "failure" and POOL_ASSERTION in text and "assertTrue(pool.map_has_run)" in text:
                return "pool", "fails only at: self.assertTrue(pool.map_has_run)"
            first = (el.get("message") or "").strip().splitlines()
            return "FAIL", first[0][:160] if first else tag
    if case.find("skipped") is not None:
        return "skip", ""
    return "pass", ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, required=True, help="pyctcdecode checkout or extracted release")
    ap.add_argument("-k", default=None, help="pytest -k expression")
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree and print its path")
    args = ap.parse_args(argv)
    tests = find_tests(args.src.resolve())
    root = Path(tempfile.mkdtemp(prefix="w2vlm-pyctc-"))
    try:
        tdir = build_tree(tests, root)
        junit = root / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(root),
            f"--junitxml={junit}",
            "-o",
            "junit_family=xunit1",
            str(tdir),
        ]
        if args.k:
            cmd += ["-k", args.k]
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1"
        )
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        if not junit.exists():
            sys.stdout.write(proc.stdout + proc.stderr)
            raise SystemExit("error: pytest wrote no report")
        counts: dict[str, int] = {}
        public = passed = 0
        for case in ET.parse(junit).getroot().iter("testcase"):
            file = Path(case.get("file") or case.get("classname", "").replace(".", "/")).name
            cls = case.get("classname", "").rsplit(".", 1)[-1]
            tid = f"{file if file.endswith('.py') else file + '.py'}::{cls}::{case.get('name')}"
            outcome, detail = classify(case)
            kind = "internal" if tid in INTERNAL else "public"
            if kind == "public":
                public += 1
                passed += outcome == "pass"
            label = outcome if kind == "public" else f"{outcome} (internal)"
            counts[label] = counts.get(label, 0) + 1
            print(f"{label:16s} {tid}" + (f"  -- {detail}" if detail else ""))
        print()
        print(
            f"public-API tests: {passed} of {public} pass; " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        )
        print(f"(pyctcdecode tests from {tests}; not run: {', '.join(SKIPPED_FILES)})")
        if args.keep:
            print(f"tree kept at {root}")
        return 0 if all(k in ("pass", "pool") or k.endswith("(internal)") for k in counts) else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
