"""The ``w2vlm`` command line.

Each command keeps its imports inside the function so that ``w2vlm --help`` stays fast and a command only
needs the extras it uses. The commands live in modules by concern and register themselves on :data:`app`,
in the order ``--help`` lists them.
"""

# isort: skip_file
from w2vlm.cli.app import EXIT_MEMORY, app, main
from w2vlm.cli import lm  # noqa: F401  build-lm, add-lm
from w2vlm.cli import models  # noqa: F401  train, average
from w2vlm.cli import speech  # noqa: F401  transcribe, serve
from w2vlm.cli import evaluate  # noqa: F401  eval, tune, visualize

__all__ = ["EXIT_MEMORY", "app", "main"]
