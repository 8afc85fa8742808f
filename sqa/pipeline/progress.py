"""Live progress of a stage from the command line, and one summary line per finished stage.

``sqa run`` executes a notebook in a Jupyter kernel, where tqdm.auto draws its bars as widgets that
a terminal cannot show. The CLI therefore starts the kernel with ``SQA_PROGRESS=text``;
:func:`text_bars_if_requested` (called by :func:`sqa.pipeline.runs.start`, every notebook's first
call) then makes tqdm.auto draw text bars, and papermill writes the kernel's stdout and stderr to
the terminal as they arrive. So the terminal shows what a stage is doing while it runs: the corpus
build's clips, every epoch's loss and dev PCC, the labeled clips, each bar with its time left.
In JupyterLab nothing changes: the same bars are widgets.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterator, TextIO

ENV = "SQA_PROGRESS"
#: seconds between two redraws of a bar when the output is not a terminal (a log file, CI)
LOG_INTERVAL_S = 10


def text_bars_if_requested() -> None:
    """Make tqdm.auto draw text bars in this process when the CLI asked for them."""
    if os.environ.get(ENV) != "text":
        return
    import tqdm.auto
    import tqdm.std

    tqdm.auto.tqdm = tqdm.std.tqdm
    tqdm.auto.trange = tqdm.std.trange


@contextlib.contextmanager
def kernel_environment(stream: TextIO) -> Iterator[None]:
    """Environment for a kernel whose progress goes to ``stream``: text bars, and where ``stream``
    is no terminal, a fixed width and a redraw at most every ``LOG_INTERVAL_S`` seconds."""
    wanted = {ENV: "text"}
    if not stream.isatty():
        wanted.update(TQDM_MININTERVAL=str(LOG_INTERVAL_S), TQDM_NCOLS="100")
    before = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LineStream:
    """Where the kernel's output goes: ``stream`` itself on a terminal; elsewhere (a log file, CI)
    each redraw of a bar becomes a line of its own instead of piling up behind carriage returns."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def write(self, text: str) -> int:
        if not self.tty:
            text = "\n".join(line for line in text.replace("\r", "\n").split("\n") if line.strip()) + "\n"
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def clock(seconds: float) -> str:
    """``83.2`` -> ``1:23``; ``3725`` -> ``1:02:05``."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class StageTimer:
    """Prints a line when a stage starts and one with its wall time when it ends."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.finished: list[tuple[str, float, str]] = []

    @contextlib.contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[dict]:
        info: dict = {"run_dir": None}
        print(f"== {name} {detail}".rstrip(), file=self.stream, flush=True)
        t0 = time.perf_counter()
        status = "failed"
        try:
            yield info
            status = "done"
        finally:
            wall = time.perf_counter() - t0
            self.finished.append((name, wall, status))
            where = f" -> {info['run_dir']}" if info["run_dir"] else ""
            print(f"== {name} {status} in {clock(wall)}{where}", file=self.stream, flush=True)

    def summary(self) -> str:
        total = sum(w for _, w, _ in self.finished)
        rows = [f"  {name:<20} {clock(w):>8}  {status}" for name, w, status in self.finished]
        return "\n".join(["stage wall times:", *rows, f"  {'total':<20} {clock(total):>8}"])
