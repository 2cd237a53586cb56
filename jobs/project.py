"""spark-submit entry point of the project stage.

    spark-submit --master spark://HOST:7077 jobs/project.py --data ROOT [options]

Takes the same arguments as `faceatlas project` (see `faceatlas project --help`).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["project", *sys.argv[1:]]))
