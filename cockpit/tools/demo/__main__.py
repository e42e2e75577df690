"""``python -m cockpit.tools.demo`` (the same as ``cockpit demo``)."""

import sys

from cockpit.tools.demo import main

sys.exit(main())
