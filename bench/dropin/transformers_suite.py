"""Run transformers' own Wav2Vec2ProcessorWithLM tests and ASR-pipeline LM tests, unchanged, against w2vlm's
processor (``--processor w2vlm``) or transformers' own with real pyctcdecode (``--processor transformers``).

``--src`` is a transformers source tree (a checkout of the version under test: it needs ``tests/``); nothing is
copied into this repository and nothing is downloaded: the hub repositories and the dataset the tests read are
rebuilt locally (bench/dropin/hf_fixtures.py) into an offline huggingface_hub cache in a temporary folder, and a
pytest plugin (bench/dropin/hf_plugin.py, copied there) swaps in w2vlm. The tests run in the interpreter that
runs this script: run it with the Python of the environment to measure (e.g. a venv with transformers 4.57 and
pyctcdecode for the transformers processor).

    python bench/dropin/transformers_suite.py --src /path/to/transformers --processor w2vlm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: transformers' test files (the processor tests were renamed in 2025; either name is used)
PROCESSOR_TESTS = (
    "tests/models/wav2vec2_with_lm/test_processing_wav2vec2_with_lm.py",
    "tests/models/wav2vec2_with_lm/test_processor_wav2vec2_with_lm.py",
)
PIPELINE_TESTS = "tests/pipelines/test_pipelines_automatic_speech_recognition.py"
#: the processor test class and the pipeline's LM tests (their names end in ``with_lm`` / contain ``lm_fast``)
SELECTION = "Wav2Vec2ProcessorWithLMTest or with_lm or lm_fast"
PROCESSORS = ("w2vlm", "transformers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run transformers' Wav2Vec2ProcessorWithLM and ASR-pipeline LM tests (unchanged, offline) "
        "against w2vlm's processor or transformers' own."
    )
    parser.add_argument("--src", required=True, type=Path, help="transformers source tree (with tests/)")
    parser.add_argument(
        "--processor",
        choices=PROCESSORS,
        default="w2vlm",
        help="w2vlm: w2vlm.install() + pyctcdecode imports pointed at w2vlm.decoder; transformers: its own "
        "processor and pyctcdecode, as installed (default: w2vlm)",
    )
    parser.add_argument("--workdir", type=Path, help="keep fixtures and reports here (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the counts and failures as JSON to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
    return parser.parse_args(argv)


def test_files(src: Path) -> list[Path]:
    processor = next((src / p for p in PROCESSOR_TESTS if (src / p).is_file()), None)
    if processor is None:
        raise SystemExit(f"{src}: none of {', '.join(PROCESSOR_TESTS)} found (is --src a transformers checkout?)")
    pipeline = src / PIPELINE_TESTS
    if not pipeline.is_file():
        raise SystemExit(f"{src}: {PIPELINE_TESTS} not found")
    return [processor, pipeline]


def shadow_tree(src: Path, workdir: Path) -> Path:
    """A tree with the checkout's test files (copied) whose ``src/transformers`` is the *installed* package:
    transformers' pipeline tests import ``src/transformers`` of their tree, and the version under test is the
    one installed in this interpreter."""
    import importlib.util

    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("transformers is not installed in this interpreter")
    tree = workdir / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "tests").mkdir(parents=True)
    for item in (src / "tests").iterdir():
        if item.is_file() and item.suffix == ".py":
            shutil.copy(item, tree / "tests" / item.name)
    for sub in ("tests/models/wav2vec2", "tests/models/wav2vec2_with_lm", "tests/pipelines", "utils"):
        shutil.copytree(src / sub, tree / sub, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(src / "tests/models/__init__.py", tree / "tests/models/__init__.py")
    (tree / "src").mkdir()
    (tree / "src/transformers").symlink_to(Path(next(iter(spec.submodule_search_locations))))
    return tree


def prepare(workdir: Path) -> dict[str, str]:
    """Fixtures + plugin in ``workdir``; returns the environment for pytest."""
    sys.path.insert(0, str(HERE))
    from hf_fixtures import build_hub_cache, build_pyctcdecode_cache

    cache = workdir / "hub"
    home = workdir / "home"  # pyctcdecode caches hub downloads under ~/.cache/pyctcdecode
    if not cache.is_dir():
        build_hub_cache(cache)
        build_pyctcdecode_cache(home / ".cache" / "pyctcdecode")
    shutil.copy(HERE / "hf_plugin.py", workdir / "hf_plugin.py")
    (workdir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(workdir), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": str(home),
            "HF_HUB_CACHE": str(cache),
            "HF_HOME": str(workdir / "hf_home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )
    return env


def summarize(report: Path) -> dict:
    root = ET.parse(report).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failures = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                if tag != "skipped":
                    message = (node.get("message") or node.text or "").strip().splitlines()
                    failures.append({"test": name, "outcome": outcome, "message": message[0][:200] if message else ""})
                break
        counts[outcome] += 1
    counts["run"] = counts["passed"] + counts["failed"] + counts["error"]
    return {"counts": counts, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    src = args.src.resolve()
    test_files(src)
    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="hf-dropin-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tree = shadow_tree(src, workdir)
    files = test_files(tree)
    env = prepare(workdir)
    env["DROPIN_PROCESSOR"] = args.processor
    report = workdir / f"report-{args.processor}.xml"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "hf_plugin", "-p", "no:cacheprovider", "--noconftest",
        "-c", str(workdir / "pytest.ini"), "--rootdir", str(tree), "-k", SELECTION,
        f"--junitxml={report}", *map(str, files),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=workdir, capture_output=not args.verbose, text=True, check=False)
    if not report.is_file():
        sys.stderr.write((result.stdout or "") + (result.stderr or ""))
        return 2
    summary = summarize(report)
    probe = "import numpy, transformers; print(transformers.__version__, numpy.__version__)"
    versions = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    summary.update(processor=args.processor, src=str(src), versions=versions.stdout.strip(), workdir=str(workdir))
    c = summary["counts"]
    print(
        f"{args.processor} processor, transformers/numpy {summary['versions']}: {c['passed']} of {c['run']} passed "
        f"({c['failed']} failed, {c['error']} errors, {c['skipped']} skipped)"
    )
    for failure in summary["failures"]:
        print(f"  {failure['outcome']}: {failure['test']}: {failure['message']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if c["failed"] == 0 and c["error"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
