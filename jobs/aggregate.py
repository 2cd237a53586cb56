"""spark-submit entry point of the aggregate stage.

    spark-submit --master spark://HOST:7077 jobs/aggregate.py --data ROOT [options]

Takes the same arguments as `faceatlas aggregate` (see `faceatlas aggregate --help`).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["aggregate", *sys.argv[1:]]))
