"""``python -m jetsplit.cli``: the same as the ``jetsplit`` command."""

from jetsplit.cli import entry

entry()
