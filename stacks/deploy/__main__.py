"""`python -m stacks.deploy ARCHIVE_DIR --target DIR [LAYER...]`."""

import sys

from stacks.deploy.deploy import main

try:
    code = main()
except KeyboardInterrupt:  # a Ctrl-C before main() set up its own handling
    print("stacks: interrupted", file=sys.stderr)
    code = 130
sys.exit(code)
