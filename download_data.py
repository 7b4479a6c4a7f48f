"""Fetch, verify and unpack the real data set into data/dataset (``--help`` lists the options).

The same command as ``python -m lensing download``: its options and exit codes are
lensing.cli.download's, the steps lensing.data.download's. The script's folder goes first on
sys.path so that this works from a plain checkout too, without the package installed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lensing.cli.download import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
