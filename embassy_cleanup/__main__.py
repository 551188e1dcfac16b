"""``python -m embassy_cleanup``: the same as the ``embassy-cleanup`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
