"""Entry point of ``python -m engine``; see :mod:`engine.cli`."""

import os
import sys

from engine.cli import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:  # the reader stopped early (`runs | head`): it took what it wanted, quietly
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail again
    code = 1
sys.exit(code)
