"""Process exit codes, documented in docs/cli.md so cron jobs and scripts can branch on them."""
from __future__ import annotations

#: Every file has a result (or was already done).
EXIT_OK = 0
#: The run finished, but at least one file got an error record (or a folder could not be read).
EXIT_SOME_FAILED = 1
#: Nothing was processed: bad settings, model would not load, output locked, interrupted.
EXIT_FATAL = 2
