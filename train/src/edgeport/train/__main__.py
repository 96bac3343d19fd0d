"""``python -m edgeport.train ARGS`` (and ``torchrun -m edgeport.train ARGS``): ``edgeport train
ARGS``. Leading -v/-q flags are the ``edgeport`` command's own."""

from __future__ import annotations

import re
import sys

from edgeport.runtime.cli import main

_GLOBAL = re.compile(r"-v+|-q|--verbose|--quiet")


def run(argv: list[str]) -> int:
    lead = 0
    while lead < len(argv) and _GLOBAL.fullmatch(argv[lead]):
        lead += 1
    return main([*argv[:lead], "train", *argv[lead:]])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
