"""The ``w2vlm`` command line.

Each command keeps its imports inside the function so that ``w2vlm --help`` stays fast and a command only
needs the extras it uses.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="w2vlm",
    help="Speech recognition with wav2vec2-family CTC models and n-gram LM beam search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Speech recognition with wav2vec2-family CTC models and n-gram LM beam search."""


def main() -> None:
    """Entry point of the ``w2vlm`` console script."""
    app()


if __name__ == "__main__":
    main()
