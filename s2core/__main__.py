"""s2core.__main__: ``python -m s2core``."""

import sys

from s2core.cli import interrupt_on_sigterm, main

if __name__ == "__main__":
    interrupt_on_sigterm()
    sys.exit(main())
