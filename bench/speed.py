"""Speed benchmark from a checkout: the same as ``rnnlab bench speed`` (rnnlab.benchmarks.speed)."""

import sys

from rnnlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "speed", *sys.argv[1:]]))
