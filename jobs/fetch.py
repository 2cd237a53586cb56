"""spark-submit entry point of the fetch stage.

    spark-submit --master spark://HOST:7077 jobs/fetch.py --data ROOT [options]

Takes the same arguments as `faceatlas fetch` (see `faceatlas fetch --help`).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["fetch", *sys.argv[1:]]))
