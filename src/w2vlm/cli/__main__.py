"""``python -m w2vlm.cli``: the command line."""

from w2vlm.cli import main

main()
