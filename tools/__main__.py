"""``python -m fxopt.tools``: the same as the ``fxopt`` command."""
import sys

from fxopt.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
