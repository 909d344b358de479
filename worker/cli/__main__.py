"""`python -m worker.cli ARGS` runs the `tokenworker` command."""

import sys

from worker.cli.main import main

sys.exit(main())
