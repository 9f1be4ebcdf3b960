"""``python -m vestige.server``: the same as the ``vestige-mcp`` console script."""

from __future__ import annotations

import sys

from vestige.server import main

if __name__ == "__main__":
    sys.exit(main())
