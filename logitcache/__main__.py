"""``python -m logitcache`` == ``logitcache``."""

import sys

from logitcache.cli import main

sys.exit(main())
