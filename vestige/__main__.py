"""`python -m vestige` runs the `vestige` command line."""

from __future__ import annotations

from vestige.cli import main

if __name__ == "__main__":
    main()
