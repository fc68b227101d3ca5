"""Which signal stopped a Ray Train or Tune run, and the driver's handlers put back afterwards.

Ray answers a stop signal in the driver with SystemExit, whatever the signal: Ray Train's SIGINT
handler aborts the run and `fit()` then raises SystemExit(1); `ray.init`'s SIGTERM handler calls
sys.exit(15). Ray Train's and Tune's handlers also stay installed after `fit()` returns, so a
Ctrl-C during the report that follows would be swallowed (Ray Train: a third one exits 0).
`StopSignals` records SIGTERM itself (chaining the handler in place) and restores the SIGINT and
SIGTERM handlers when the run ends. Pure Python; the main thread only (elsewhere it does nothing:
signal handlers can only be set there).
"""
from __future__ import annotations

import signal
import threading

from dfei.errors import RunInterruptedError

SIGINT_EXIT, SIGTERM_EXIT = 130, 143  # 128 + the signal number: what a shell reports


class StopSignals:
    """`with StopSignals() as stops: trainer.fit()`; then `stops.error(message)` is the
    RunInterruptedError to raise for a SystemExit from fit(): exit status 143 when SIGTERM
    arrived, else 130 (Ctrl-C, the only other signal Ray turns into SystemExit)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._saved: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        self._saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        chained = self._saved[signal.SIGTERM]

        def on_sigterm(signum, frame):
            self.received.append(signum)
            if callable(chained):
                chained(signum, frame)
            else:  # SIG_DFL: end as the default action would, through SystemExit
                raise SystemExit(SIGTERM_EXIT)

        signal.signal(signal.SIGTERM, on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)

    @property
    def name(self) -> str:
        """The signal that stopped the run, as the message names it: "SIGTERM" or "Ctrl-C"."""
        return "SIGTERM" if signal.SIGTERM in self.received else "Ctrl-C"

    def error(self, message: str) -> RunInterruptedError:
        """RunInterruptedError(message) with exit status 143 after SIGTERM, else 130."""
        return RunInterruptedError(message, SIGTERM_EXIT if signal.SIGTERM in self.received else SIGINT_EXIT)
