"""``python -m aiorl``: the same as the ``aiorl`` command."""

from aiorl.cli import main

if __name__ == "__main__":
    main()
