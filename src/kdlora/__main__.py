import sys

from kdlora.cli import main

sys.exit(main())
