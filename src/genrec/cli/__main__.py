"""``python -m genrec.cli``: the same as the ``genrec`` command."""

from genrec.cli import app

app()
