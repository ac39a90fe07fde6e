"""A progress bar for local runs, fed by the workers through small files.

DirectRunner's multi-process workers cannot update a bar in the launcher, and Beam's
metrics only arrive when the pipeline ends. So each worker process rewrites one small file
with its counts (at most twice a second), and the launcher sums the files into a tqdm bar.
On Dataflow there is no progress folder; the Beam counters show the funnel live instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

_FLUSH_EVERY_S = 0.5


class ProgressWriter:
    """Worker side: count outcomes, and now and then write them to this process's file."""

    def __init__(self, folder: str) -> None:
        self.path = Path(folder) / f"{os.getpid()}-{threading.get_ident()}-{id(self)}.json"
        self.counts = {"done": 0, "ok": 0}
        self._last_flush = 0.0

    def add(self, ok: bool) -> None:
        self.counts["done"] += 1
        self.counts["ok"] += int(ok)
        if time.monotonic() - self._last_flush >= _FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        temp = self.path.with_suffix(".tmp")
        temp.write_text(json.dumps(self.counts))
        os.replace(temp, self.path)
        self._last_flush = time.monotonic()


def _read_totals(folder: Path) -> dict[str, int]:
    totals = {"done": 0, "ok": 0}
    for path in folder.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            for name, value in json.loads(path.read_text()).items():
                totals[name] = totals.get(name, 0) + int(value)
    return totals


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str = "images downloaded") -> Iterator[str | None]:
    """Yield a folder for `ProgressWriter`s (None when disabled) while a bar shows the sums."""
    if not enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="lait-progress-") as folder:
        stop = threading.Event()
        bar = tqdm(desc=description, unit=" img", dynamic_ncols=True, mininterval=1.0)

        def poll() -> None:
            while not stop.wait(0.5):
                totals = _read_totals(Path(folder))
                bar.n = totals["done"]
                bar.set_postfix(usable=totals["ok"], refresh=False)
                bar.refresh()

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield folder
        finally:
            stop.set()
            thread.join()
            totals = _read_totals(Path(folder))
            bar.n = totals["done"]
            bar.set_postfix(usable=totals["ok"])
            bar.close()
