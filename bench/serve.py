"""`python -m functions_framework`, with Datastore RPCs counted into $BENCH_RPC_DIR."""

from __future__ import annotations

import os
from pathlib import Path

from bench import rpc_count


def main() -> None:
    """Install the RPC counter before anything makes a channel, then run the framework's CLI."""
    rpc_count.install(Path(os.environ["BENCH_RPC_DIR"]))
    from functions_framework._cli import _cli

    _cli(prog_name="python -m bench.serve")


if __name__ == "__main__":
    main()
