"""``python -m k3snet`` and the ``k3snet`` console script.

``k3snet --version`` answers before the CLI's modules are imported (they cost
~10x Python's own start-up; measured with
``python benchmarks/bench_cli.py``); everything else goes to :mod:`k3snet.cli`.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Run the ``k3snet`` command."""
    if sys.argv[1:] == ["--version"]:
        from k3snet._version import __version__  # noqa: PLC0415 - the whole point

        print(f"k3snet {__version__}")
        return 0
    from k3snet.cli import main as cli_main  # noqa: PLC0415 - only when there is work

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
