"""`python -m llmserve.tools COMMAND [ARGS]`: what every script in scripts/ runs."""

import sys

from .cli import main

sys.exit(main())
