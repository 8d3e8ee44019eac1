"""``python -m adam_plugin linreg | sweep``: the chapter's command line (:mod:`adam_plugin.chapter.cli`).

Internal: the command is public, this module's names are not (see :mod:`adam_plugin`).
"""
import sys

from ._pipe import run
from .chapter.cli import main

sys.exit(run(main))
