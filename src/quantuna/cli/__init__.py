"""The ``quantuna`` command line: argv -> one API call -> what a person sees.

One module per group of verbs (:mod:`~quantuna.cli.run`, :mod:`~quantuna.cli.inspect`,
:mod:`~quantuna.cli.export`, :mod:`~quantuna.cli.view`), one command table in
:mod:`~quantuna.cli.app`. No logic of its own: errors in the input print one line to stderr and
exit with status 2; nothing is written.
"""

from quantuna.cli.app import main

__all__ = ["main"]
