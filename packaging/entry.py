"""The frozen executable's entry point: the same `main` as the `posdiag` console script."""

import sys

from agent.cli import main

sys.exit(main())
