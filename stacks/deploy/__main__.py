"""`python -m stacks.deploy ARCHIVE_DIR --target DIR [LAYER...]`."""

import sys

from stacks.deploy.deploy import main

sys.exit(main())
