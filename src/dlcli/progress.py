"""The progress display: a live Keras-style bar on a terminal, one plain line per epoch elsewhere.

It refreshes only when the engine reports (a few times a second), never per step, and
takes an injectable Rich Console so tests can render into a StringIO.
"""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .engine import REPORT_INTERVAL_S, Callback, Trainer

BAR_WIDTH = 30


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_per_step(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


def format_metrics(logs: dict[str, float]) -> str:
    parts = []
    for key, value in logs.items():
        if key in ("epoch", "lr", "seconds") or value is None:
            continue
        parts.append(f"{key}: {value:.4f}")
    return " - ".join(parts)


class ProgressDisplay(Callback):
    """`Epoch 3/15`, a bar with n/N steps, elapsed time, time per step, running metrics."""

    def __init__(self, console: Console, *, live: Optional[bool] = None) -> None:
        self.console = console
        self.live_mode = console.is_terminal if live is None else live
        self._live: Optional[Live] = None
        self._started = 0.0
        # Set after an epoch shorter than the engine's report interval: the next one would end
        # before its bar is ever refreshed, so it is not drawn live at all and its two lines are
        # printed when it ends. A table's 5 ms epoch spent 0.4 ms starting and stopping a Live.
        self._epochs_are_short = False

    def on_epoch_begin(self, epoch: int, trainer: Trainer) -> None:
        self._started = time.perf_counter()
        if self.live_mode and not self._epochs_are_short:
            self.console.print(f"Epoch {epoch}/{trainer.epochs}", highlight=False)
            self._live = Live(self._render(trainer), console=self.console, auto_refresh=False, transient=True)
            self._live.start()

    def on_progress(self, trainer: Trainer) -> None:
        if self._live is not None:
            self._live.update(self._render(trainer), refresh=True)

    def _bar(self, step: int, total: int) -> Text:
        filled = int(BAR_WIDTH * step / total) if total else BAR_WIDTH
        bar = Text()
        bar.append("━" * filled, style="green")
        bar.append("━" * (BAR_WIDTH - filled), style="grey37")
        return bar

    def _render(self, trainer: Trainer, logs: Optional[dict[str, float]] = None) -> Text:
        step, total = trainer.running.step, trainer.steps_per_epoch
        elapsed = time.perf_counter() - self._started
        width = len(str(total))
        line = Text(f"{step:>{width}}/{total} ", style="bold")
        line.append_text(self._bar(step, total))
        per_step = elapsed / step if step else 0.0
        line.append(f" {format_seconds(elapsed)} {format_per_step(per_step) if step else ''}")
        if logs is None and step and step < total:  # still running: Keras's estimate of the rest
            line.append(f" eta {format_seconds(per_step * (total - step))}", style="dim")
        metrics = format_metrics(logs if logs is not None else trainer.running_logs())
        if metrics:
            line.append(" - " + metrics)
        return line

    def on_epoch_end(self, epoch: int, logs: dict[str, float], trainer: Trainer) -> None:
        if self.live_mode:
            self._epochs_are_short = time.perf_counter() - self._started < REPORT_INTERVAL_S
            if self._live is not None:
                self._live.stop()
                self._live = None
                self.console.print(self._render(trainer, logs), highlight=False, soft_wrap=True)
            else:  # a short epoch: the same two lines a live one leaves, in one print
                title = Text(f"Epoch {epoch}/{trainer.epochs}\n")
                self.console.print(title.append_text(self._render(trainer, logs)), highlight=False, soft_wrap=True)
            return
        step, total = trainer.running.step, trainer.steps_per_epoch
        seconds = logs.get("seconds", time.perf_counter() - self._started)
        per_step = seconds / step if step else 0.0
        self.console.print(
            f"Epoch {epoch}/{trainer.epochs} - {step}/{total} - {format_seconds(seconds)} "
            f"{format_per_step(per_step)} - {format_metrics(logs)}",
            highlight=False,
            soft_wrap=True,
        )

    def close(self) -> None:
        """Stop a live display (on an interrupt or error) so the terminal is left clean."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def on_train_end(self, trainer: Trainer) -> None:
        self.close()


class LoadProgress:
    """Progress of a long data load (decoding an image folder), given to
    `load_dataset(progress=...)`: a live bar on a terminal, refreshed a few times a second,
    and one line with the count and time when a stage is done (the only output elsewhere)."""

    REFRESH_S = 0.25

    def __init__(self, console: Console, *, live: Optional[bool] = None) -> None:
        self.console = console
        self.live_mode = console.is_terminal if live is None else live
        self._live: Optional[Live] = None
        self._stage: Optional[str] = None
        self._started = 0.0
        self._next = 0.0

    def __call__(self, description: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if description != self._stage:
            self.close()
            self._stage, self._started, self._next = description, now, 0.0
            if self.live_mode:
                self._live = Live(Text(), console=self.console, auto_refresh=False, transient=True)
                self._live.start()
        if self._live is not None and (now >= self._next or done >= total):
            self._next = now + self.REFRESH_S
            line = Text(f"{description} {done:>{len(str(total))}}/{total} ")
            filled = int(BAR_WIDTH * done / total) if total else BAR_WIDTH
            line.append("━" * filled, style="green")
            line.append("━" * (BAR_WIDTH - filled), style="grey37")
            line.append(f" {format_seconds(now - self._started)}")
            self._live.update(line, refresh=True)
        if done >= total:
            self.close()
            self.console.print(f"{description}: {total} in {format_seconds(now - self._started)}", highlight=False)
            self._stage = None

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
