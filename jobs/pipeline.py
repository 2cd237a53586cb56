"""spark-submit entry point of the whole chain (ingest, fetch, faces, project, aggregate,
render, site).

    spark-submit --master spark://HOST:7077 jobs/pipeline.py --data ROOT INPUT... [options]

Takes the same arguments as `faceatlas run` (see `faceatlas run --help`).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
