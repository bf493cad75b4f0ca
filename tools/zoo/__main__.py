"""``python -m jetsplit.tools.zoo``: train, export and check the demo zoo."""

from __future__ import annotations

from jetsplit.tools.zoo.build import main

raise SystemExit(main())
