"""A progress bar on stderr for long runs (tqdm): requests finished of total, simulated time, rate,
ETA. Shown only on a terminal, only once a run has taken a second, never in --quiet runs; lines
printed while it shows go through it so they are not torn."""
import sys

import click


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and total and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="req", file=sys.stderr, delay=1.0, dynamic_ncols=True, leave=False,
                            desc="simulating")
        self._calls = 0

    def __call__(self, finished: int, now_ns: int) -> None:
        """A batch completed; the bar is redrawn every 64 completions (cheap per batch)."""
        self._calls += 1
        if self.bar is None or self._calls & 63:
            return
        self.bar.update(finished - self.bar.n)
        self.bar.set_postfix_str(f"simulated {now_ns / 1e9:,.1f} s", refresh=False)

    def echo(self, line: str) -> None:
        if self.bar is None:
            click.echo(line)
        else:
            self.bar.write(line, file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
