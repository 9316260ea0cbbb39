"""The ``asyncclf`` command line, built on the public API.

Every command streams its input in bounded memory except ``train`` (a fit needs all
the data). Problems with the input, the model or the output end the command with one
line on stderr, ``asyncclf: FILE[:LINE]: what went wrong``, and exit status 1; no
traceback. Usage errors exit with status 2, as argparse does.

Modules, each importing only those before it: ``errors`` (the one-line errors),
``reading`` (input), ``output``, ``placement`` (where the model runs), ``models``
(model files), ``commands`` (train, classify, rank, eval, demo), ``learn``, ``parser``
(argparse) and ``run`` (``main``).
"""

from .run import main

__all__ = ["main"]
