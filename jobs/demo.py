"""spark-submit entry point of the demo: the demo world through every stage, scored.

    spark-submit --master spark://HOST:7077 jobs/demo.py --data ROOT [options]

Takes the same arguments as `faceatlas demo` (see `faceatlas demo --help`). The driver
serves the world's photos on 127.0.0.1, so run it in client mode on a machine whose
executors can reach that address (a one-machine cluster, as in the tests).
"""

import sys

from faceatlas.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
