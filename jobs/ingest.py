"""spark-submit entry point of the ingest stage.

    spark-submit --master spark://HOST:7077 jobs/ingest.py INPUT... --data ROOT [options]

Takes the same arguments as `faceatlas ingest` (see `faceatlas ingest --help`).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
