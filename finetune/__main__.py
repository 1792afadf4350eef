"""`python -m finetune`: the same as the `finetune` command."""

import sys

from .cli import main

sys.exit(main())
