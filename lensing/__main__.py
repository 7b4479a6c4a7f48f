"""``python -m lensing COMMAND [options]``: see ``lensing.cli``."""

import sys

from lensing.cli import main

if __name__ == "__main__":
    sys.exit(main())
