"""pytest plugin for transformers_suite.py (copied into its work folder and loaded with ``-p hf_plugin``).

Before transformers' test modules are imported it:
- replaces the ``datasets`` module with a synthetic ``librispeech_asr_dummy`` (nothing is downloaded);
- with ``DROPIN_PROCESSOR=w2vlm``: points ``pyctcdecode`` imports at ``w2vlm.decoder``, makes transformers
  report pyctcdecode as available, and calls ``w2vlm.install()`` (so ``Wav2Vec2ProcessorWithLM``,
  ``AutoProcessor`` and ``pipeline`` are w2vlm's); with ``transformers``: changes nothing else.
The hub cache and offline switches come from the environment the harness sets.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from typing import Any

import numpy as np
from hf_fixtures import DATASET_ROWS, LIBRISPEECH_DUMMY


class _Rows:
    """The little of ``datasets.Dataset`` the LM tests use: indexing, ``sort``, ``cast_column``, iteration."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._rows[index]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Any:
        return iter(self._rows)

    def sort(self, column: str) -> _Rows:
        return _Rows(sorted(self._rows, key=lambda row: row[column]))

    def cast_column(self, column: str, feature: Any) -> _Rows:
        return self


def _librispeech_dummy() -> _Rows:
    rows = []
    for i in range(DATASET_ROWS):
        rng = np.random.default_rng(i)
        t = np.arange(int(16000 * (2.0 + (i % 5) * 0.5))) / 16000
        audio = 0.2 * np.sin(2 * np.pi * (150 + 7 * i) * t) + 0.05 * rng.standard_normal(t.size)
        rows.append(
            {
                "id": f"{1000 + i}-0000-{i:04d}",
                "audio": {"array": audio.astype(np.float64), "sampling_rate": 16000, "path": None},
                "text": "",
            }
        )
    return _Rows(rows)


def _fake_datasets() -> types.ModuleType:
    module = types.ModuleType("datasets")
    module.__spec__ = importlib.machinery.ModuleSpec("datasets", None)

    def load_dataset(path: str, *args: Any, split: str | None = None, **kwargs: Any) -> _Rows:
        if path != LIBRISPEECH_DUMMY:
            raise OSError(f"offline harness: no local stand-in for dataset {path!r}")
        rows = _librispeech_dummy()
        if split and "[:" in split:
            rows = _Rows(list(rows)[: int(split.split("[:")[1].rstrip("]"))])
        return rows

    class Audio:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.kwargs = kwargs

    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    module.Audio = Audio  # type: ignore[attr-defined]
    module.Dataset = _Rows  # type: ignore[attr-defined]
    module.__version__ = "0.0-offline-stand-in"  # type: ignore[attr-defined]
    return module


def _always_available() -> bool:
    return True


def pytest_configure(config: Any) -> None:
    sys.modules["datasets"] = _fake_datasets()
    if os.environ.get("DROPIN_PROCESSOR") != "w2vlm":
        return
    import w2vlm
    import w2vlm.decoder

    sys.modules["pyctcdecode"] = w2vlm.decoder
    import transformers.testing_utils
    import transformers.utils
    import transformers.utils.import_utils

    for module in (transformers.utils, transformers.utils.import_utils, transformers.testing_utils):
        module.is_pyctcdecode_available = _always_available
    w2vlm.install()
