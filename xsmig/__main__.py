import sys

from xsmig.cli import main

sys.exit(main())
