"""spark-submit entry point of the faces stage.

    spark-submit --master spark://HOST:7077 jobs/faces.py --data ROOT [options]

Takes the same arguments as `faceatlas faces` (see `faceatlas faces --help`).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["faces", *sys.argv[1:]]))
