"""``python -m dancegenre``: the same as the ``dancegenre`` command."""

import sys

from dancegenre.cli.parser import main

sys.exit(main())
