"""``python -m dashserve`` runs the command line."""

import sys

from dashserve.cli import main

sys.exit(main())
