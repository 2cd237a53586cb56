import sys

from faceatlas.cli import main

sys.exit(main())
