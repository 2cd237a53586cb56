"""spark-submit entry point of the render stage.

    spark-submit --master spark://HOST:7077 jobs/render.py --data ROOT [options]

Takes the same arguments as `faceatlas render` (see `faceatlas render --help`).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["render", *sys.argv[1:]]))
