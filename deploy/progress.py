"""Progress hooks for long work (timed loops, stages) and their tqdm bars on stderr: the CLI passes bars in; the
library default is silent."""
from __future__ import annotations

import sys



class Progress:
    """Hooks for a progress display (the CLI draws bars); every method is a no-op here."""

    def stage(self, text: str) -> None:
        """A step without a measurable length (loading, parity...)."""

    def start(self, label: str, iterations: int | None, duration_s: float | None) -> None:
        """A timed loop begins: exactly one of ``iterations`` / ``duration_s`` is set."""

    def step(self, done: int, elapsed_s: float) -> None:
        """After each timed iteration (outside the timed region)."""

    def end(self) -> None:
        """The timed loop ended (also after an interruption)."""


class BarProgress(Progress):
    """One bar per timed loop, redrawn at most every 0.2 s, and a line per stage."""

    bar = None

    def stage(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(f"[bench] {text}", file=sys.stderr)

    def start(self, label: str, iterations: int | None, duration_s: float | None) -> None:
        from tqdm import tqdm

        self.seconds, self.shown_at = iterations is None, 0.0
        self.bar = tqdm(total=iterations or duration_s, desc=label, unit="it" if iterations else "s",
                        leave=False, file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit}")

    def step(self, done: int, elapsed_s: float) -> None:
        if elapsed_s - self.shown_at >= 0.2:  # a redraw per sub-millisecond GPU iteration would cost more
            self.shown_at = elapsed_s
            self.bar.n = min(elapsed_s, self.bar.total) if self.seconds else done
            self.bar.refresh()

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_for(enabled: bool) -> Progress:
    return BarProgress() if enabled else Progress()
