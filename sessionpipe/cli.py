"""The ``sessionpipe`` command: the workers' commands plus ``demo`` and ``process``."""

from __future__ import annotations

from sessionpipe import local
from workers.cli import cli

cli.command()(local.demo)
cli.command()(local.process)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
