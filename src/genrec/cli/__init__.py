"""The ``genrec`` command line: parse, load, call the library, print. Nothing else lives here.

Every flag of ``genrec run`` sets one config key (shown in its help); ``--set key=value``
sets any key, so a YAML config and the flag form are interchangeable. One module per group of
commands; each registers its commands on the apps of :mod:`genrec.cli._common`.
"""

from genrec.cli import data, experiments, llm, serving  # noqa: F401  (registers the commands)
from genrec.cli._common import app, print_results

__all__ = ["app", "print_results"]
