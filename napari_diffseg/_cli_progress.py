"""What the CLI's long subcommands print while they work: status lines and progress on stderr.

In a terminal the progress is tqdm's live bar. When stderr is not a terminal (a log file, CI, a
pipe) tqdm would disable itself or overwrite one line with carriage returns; there the same tqdm
bar instead writes one plain line every :data:`LOG_INTERVAL_S` seconds, with the count, the
rate and the time left, so a long run on a CPU is never silent. ``--quiet`` turns both off; the
results on stdout and the errors stay.
"""

from __future__ import annotations

import sys
from typing import TextIO

#: seconds between two progress lines when stderr is not a terminal
LOG_INTERVAL_S = 5.0
#: one progress line in a log: "train:  40% 120/300 [00:45<01:07, 2.67it/s, loss=0.412]"
LOG_FORMAT = ("{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} "
              "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")


class _LineStream:
    """A stream for tqdm that turns each refresh (``"\\r" + bar``) into one plain line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total: int, desc: str, unit: str = "it", *, quiet: bool = False,
                 initial: int = 0, stream: TextIO | None = None):
    """A tqdm bar on stderr (or `stream`) that shows itself whether or not that is a terminal.

    Advance it with ``bar.update(k)`` (not by setting ``bar.n``), so that away from a terminal
    it prints at most one line every :data:`LOG_INTERVAL_S` seconds, plus the last one on
    ``close()``. `initial` is where a resumed run starts: its rate counts only the new work.
    """
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if quiet:
        return tqdm(total=total, initial=initial, disable=True)
    if _is_terminal(stream):
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream,
                    dynamic_ncols=True, disable=False)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=_LineStream(stream),
                mininterval=LOG_INTERVAL_S, bar_format=LOG_FORMAT, disable=False)


def status(message: str, *, quiet: bool = False) -> None:
    """One line on stderr about what the command is doing (nothing when `quiet`)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)
