"""``python -m logitcache.cli`` == ``logitcache``."""

import sys

from logitcache.cli import main

sys.exit(main())
