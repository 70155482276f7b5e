"""Speed benchmark from a checkout: the same as ``rnnlab bench speed`` (rnnlab.benchmarks.speed)."""

from rnnlab.benchmarks.speed import main

if __name__ == "__main__":
    main()
