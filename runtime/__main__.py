import sys

from ticor.cli import main

sys.exit(main())
