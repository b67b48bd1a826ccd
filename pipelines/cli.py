"""The `vae-anomaly` command (also `python -m pipelines`): one subcommand per pipeline."""

from __future__ import annotations

import sys

from . import demo

COMMANDS = {"demo": demo.main}
USAGE = f"usage: vae-anomaly {{{','.join(COMMANDS)}}} [options]   (each command has --help)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] not in COMMANDS:
        print(f"vae-anomaly: error: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    COMMANDS[argv[0]](argv[1:])
    return 0
