import sys

from multiscale_transformer.cli import main

sys.exit(main())
