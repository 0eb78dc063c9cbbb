"""``python -m infospec``: the ``infospec`` command (so that ``torchrun -m infospec`` works)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
