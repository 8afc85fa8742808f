"""``python -m sqa``: the ``sqa`` command (:func:`sqa.cli.main`), for installs without the script on PATH."""

import sys

from sqa.cli import main

if __name__ == "__main__":
    sys.exit(main())
