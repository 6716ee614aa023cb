"""``python -m nebula_sync``: the console (see :mod:`nebula_sync.console`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the console (or ``demo``) with ``argv`` (default: the command line); the exit status."""
    from nebula_sync.console._cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
