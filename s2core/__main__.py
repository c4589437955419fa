"""s2core.__main__: ``python -m s2core``."""

import sys

from s2core.cli import main

if __name__ == "__main__":
    sys.exit(main())
