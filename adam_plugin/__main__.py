"""``python -m adam_plugin linreg | sweep``: the chapter's command line (:mod:`adam_plugin.chapter.cli`)."""
import sys

from .chapter.cli import main

sys.exit(main())
