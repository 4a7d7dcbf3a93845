"""Process exit codes, documented in docs/cli.md so cron jobs and scripts can branch on them."""
from __future__ import annotations

#: Every file has a result (or was already done).
EXIT_OK = 0
#: The run finished, but at least one file got an error record (or a folder could not be read).
EXIT_SOME_FAILED = 1
#: Nothing was processed: bad settings, model would not load, output locked, interrupted.
EXIT_FATAL = 2
#: Stopped by a signal N (SIGINT, SIGTERM): 128 + N, as shells report it (130, 143). Records written
#: before it are whole and kept; a rerun goes on from there.
EXIT_SIGNAL_BASE = 128
