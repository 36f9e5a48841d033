"""Progress of a capacity run: a line per stage and per LoadGen run, and a bar over each run's expected seconds."""
from __future__ import annotations

import sys
from typing import Callable


class SearchProgress:
    """The hooks a capacity run calls; every one is silent here (the CLI passes :class:`SearchBars`)."""

    def stage(self, text: str) -> None:
        """A step: loading, profiling, a row's start."""

    def trial(self, label: str, expected_s: float) -> Callable[[float], None] | None:
        """A LoadGen run starts; returns a function called with its elapsed seconds, or None."""
        return None

    def trial_done(self, label: str, outcome: str) -> None:
        """A LoadGen run ended with ``outcome`` (its validity, latencies, configuration)."""


class SearchBars(SearchProgress):
    """tqdm on stderr: one line per stage and finished run, one bar for the run in progress."""

    def __init__(self) -> None:
        self._bar = None

    def stage(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"[capacity] {text}", file=sys.stderr)

    def trial(self, label: str, expected_s: float) -> Callable[[float], None]:
        from tqdm import tqdm

        self._close()
        self._bar = tqdm(total=round(expected_s, 1), desc=label, unit="s", leave=False, file=sys.stderr,
                         bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s")
        bar = self._bar

        def tick(elapsed_s: float) -> None:
            bar.n = min(elapsed_s, bar.total)
            bar.refresh()
        return tick

    def trial_done(self, label: str, outcome: str) -> None:
        from tqdm import tqdm

        self._close()
        tqdm.write(f"[capacity] {label}: {outcome}", file=sys.stderr)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
