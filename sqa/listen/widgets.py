"""Listening-and-scoring UI (ipywidgets): browse, play, compare and rate clips of a manifest.

Classes (each has a ``.widget`` to display and methods tests drive without a browser):

- :class:`ClipFilter`: corpus, split, MOS range and a text search on ``utt_id``/``sys_id``.
- :class:`ClipView`: a player (``ipywidgets.Audio`` holding WAV bytes, resampled into the
  browser-friendly 8-48 kHz range and level-normalised), waveform + spectrogram (PNG), and a small
  table of the label next to every model's prediction.
- :class:`ListeningTest`: a blind ACR test (Bad ... Excellent). A named listener gets the clips
  in an order shuffled per listener (the clip *set* depends on ``seed`` only, so all listeners
  rate the same clips), optionally with hidden clean references mixed in, shown only as
  "clip k of n". Every vote is appended to a ratings CSV (``sqa.listen.ratings_store``); restarting resumes.
- :class:`ClipBrowser`: pick any clip of the filtered list and see everything about it.
- :class:`Comparison`: two models' predictions side by side, the clips they disagree on most
  first, each with a play button.
- :class:`ListenApp`: the three in tabs, as stage 07 shows them.

Hidden references: a clip's reference is the manifest's ``reference_path`` column (relative to the
corpus root) if present, else the demo corpora's clean source ``<data>/clean/<source>.wav``
(``source_id`` ``demo/<source>``, the corpus root being ``<data>/<corpus>``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable, Mapping

import ipywidgets as W
import numpy as np
import pandas as pd

from sqa.data import manifest
from sqa.listen import ratings_store
from sqa.listen.clips import (
    Stimulus,
    disagreements,
    html_table,
    normalize,
    playback_signal,
    playlist,
    prediction_table,
    select_clips,
    spectrogram_png,
    wav_bytes,
)

ALL = "(all)"



class ClipFilter:
    """Corpus, split, MOS range and text search over a manifest; ``frame()`` is the selection.

    Clips without a label pass the MOS filter only while it spans the whole 1-5 range.
    """

    def __init__(self, df: pd.DataFrame, corpus: str = "", split: str = "test") -> None:
        if df.empty:
            raise ValueError("the manifest has no clips to listen to")
        self.df = df
        corpora = sorted(df["corpus"].unique())
        if corpus and corpus not in corpora:
            raise ValueError(f"corpus={corpus!r} is not in the manifest; it has: {', '.join(corpora)}")
        if split not in manifest.SPLITS:
            raise ValueError(f"split={split!r} is not one of {', '.join(manifest.SPLITS)}")
        if not corpus:
            with_split = [c for c in corpora if (df.loc[df["corpus"] == c, "split"] == split).any()]
            corpus = (with_split or corpora)[0]
        self.corpus = W.Dropdown(options=corpora, value=corpus, description="corpus")
        self.split = W.Dropdown(options=self._splits(corpus), description="split")
        self.split.value = split if split in self.split.options else self.split.options[0]
        self.mos = W.FloatRangeSlider(value=(1.0, 5.0), min=1.0, max=5.0, step=0.1, description="MOS",
                                      readout_format=".1f", continuous_update=False)
        self.search = W.Text(description="search", placeholder="part of utt_id or sys_id")
        self.count = W.Label()
        self._callbacks: list[Callable[[], None]] = []
        self.corpus.observe(self._corpus_changed, names="value")
        for w in (self.split, self.mos, self.search):
            w.observe(lambda _change: self._changed(), names="value")
        self._changed()
        self.widget = W.VBox([W.HBox([self.corpus, self.split]), W.HBox([self.mos, self.search, self.count])])

    def _splits(self, corpus: str) -> list[str]:
        present = set(self.df.loc[self.df["corpus"] == corpus, "split"])
        return [s for s in manifest.SPLITS if s in present]

    def _corpus_changed(self, _change: Any) -> None:
        keep = self.split.value
        options = self._splits(self.corpus.value)
        self.split.options = options
        self.split.value = keep if keep in options else options[0]
        self._changed()

    def _changed(self) -> None:
        n = len(self.frame())
        self.count.value = f"{n} clip{'s' if n != 1 else ''} match"
        for cb in self._callbacks:
            cb()

    def on_change(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def frame(self) -> pd.DataFrame:
        df = self.df
        sel = df[(df["corpus"] == self.corpus.value) & (df["split"] == self.split.value)]
        lo, hi = self.mos.value
        full = lo <= 1.0 and hi >= 5.0
        in_range = sel["mos"].between(lo - 1e-9, hi + 1e-9) | (sel["mos"].isna() & full)
        sel = sel[in_range]
        text = self.search.value.strip().lower()
        if text:
            hit = (sel["utt_id"].str.lower().str.contains(text, regex=False)
                   | sel["sys_id"].astype(str).str.lower().str.contains(text, regex=False))
            sel = sel[hit]
        return sel.sort_values("utt_id")


class ClipView:
    """Player, and (only when revealed) waveform/spectrogram and label-vs-predictions table of one stimulus."""

    def __init__(self, df: pd.DataFrame, roots: Mapping[str, Path],
                 predictions: Mapping[str, pd.DataFrame] | None = None,
                 level_dbfs: float | None = -26.0) -> None:
        self.rows = df.set_index("utt_id", drop=False)
        self.roots = {c: Path(r) for c, r in roots.items()}
        self.preds = prediction_table(predictions or {})
        self.level_dbfs = level_dbfs
        self.title = W.HTML()
        self.audio = W.Audio(format="wav", autoplay=False, controls=True, loop=False)
        self.image = W.Image(format="png", layout=W.Layout(max_width="680px"))
        self.info = W.HTML()
        self.info_frame = pd.DataFrame()
        self.stimulus: Stimulus | None = None
        self.widget = W.VBox([self.title, self.audio, self.image, self.info])

    def file(self, s: Stimulus) -> Path:
        if s.corpus not in self.roots:
            raise KeyError(f"no audio root for corpus {s.corpus!r}; roots: {', '.join(self.roots)}")
        return self.roots[s.corpus] / s.path

    def info_table(self, s: Stimulus) -> pd.DataFrame:
        """``source, MOS, note``: the clip's label, then each model's prediction."""
        rows = []
        if s.is_reference:
            rows.append({"source": "label", "MOS": np.nan, "note": "hidden clean reference"})
        elif s.utt_id in self.rows.index:
            r = self.rows.loc[s.utt_id]
            note = f"{r['mos_scale']}"
            if pd.notna(r.get("n_votes")):
                note += f", {int(r['n_votes'])} votes"
            if pd.notna(r.get("mos_std")):
                note += f", std {r['mos_std']:.2f}"
            rows.append({"source": "label", "MOS": r["mos"], "note": note})
        for model in self.preds.columns:
            pred = self.preds[model].get(s.utt_id, np.nan) if not s.is_reference else np.nan
            rows.append({"source": model, "MOS": pred, "note": "" if pd.notna(pred) else "not scored"})
        return pd.DataFrame(rows, columns=["source", "MOS", "note"])

    def show(self, s: Stimulus, title: str, reveal: bool) -> None:
        """Load ``s`` into the player; the picture, table and utt_id only when ``reveal``. A blind
        ACR trial (ITU-T P.808 practice) plays audio only: raters hear, they do not see."""
        x, sr = playback_signal(self.file(s))
        self.stimulus = s
        self.audio.value = wav_bytes(normalize(x, self.level_dbfs), sr)
        self.image.value = spectrogram_png(x, sr, title=s.utt_id) if reveal else b""
        self.image.layout.display = None if reveal else "none"
        shown = f"{title} · <code>{html.escape(s.utt_id)}</code>" if reveal else title
        self.title.value = f"<b>{shown}</b>"
        self.info_frame = self.info_table(s)
        self.info.value = html_table(self.info_frame) if reveal else ""

    def clear(self, message: str = "") -> None:
        self.stimulus = None
        self.audio.value = b""
        self.image.value = b""
        self.info.value = ""
        self.title.value = message


# ---------------------------------------------------------------- the listening test

class ListeningTest:
    """A blind ACR listening test over a manifest; votes go to ``ratings_path``.

    Drive it like a listener: ``filter`` widgets, ``listener.value``, ``start_button.click()``,
    then per clip ``rating.value = 4`` and ``submit.click()`` (or :meth:`rate`).
    """

    def __init__(self, df: pd.DataFrame, roots: Mapping[str, Path], ratings_path: Path | str,
                 predictions: Mapping[str, pd.DataFrame] | None = None, *, corpus: str = "",
                 split: str = "test", n_clips: int = 20, seed: int = 0, listener: str = "",
                 references: bool = False, level_dbfs: float | None = -26.0, resume: bool = True,
                 on_done: Callable[[], None] | None = None) -> None:
        if n_clips < 1:
            raise ValueError(f"n_clips={n_clips} must be at least 1")
        self.ratings_path = Path(ratings_path)
        self.roots = {c: Path(r) for c, r in roots.items()}
        self.seed = int(seed)
        self.resume = resume
        self.on_done = on_done
        self.filter = ClipFilter(df, corpus, split)
        self.view = ClipView(df, roots, predictions, level_dbfs)
        self.listener = W.Text(value=listener, description="listener", placeholder="your name")
        self.n_clips = W.BoundedIntText(value=n_clips, min=1, max=100000, description="clips")
        self.references = W.Checkbox(value=references, description="hidden references", indent=False)
        self.show_info = W.Checkbox(value=False, description="show labels & predictions", indent=False)
        self.start_button = W.Button(description="Start session", button_style="primary", icon="play")
        self.rating = W.ToggleButtons(options=[(f"{k} {name}", k) for k, name in ratings_store.ACR_LABELS.items()],
                                      value=None, disabled=True, style={"button_width": "96px"})
        self.submit = W.Button(description="Submit & next", disabled=True, button_style="success")
        self.status = W.HTML()
        self.playlist: list[Stimulus] = []
        self.position = 0
        self.session = ""
        self.session_listener = ""
        self.saved = 0
        self.start_button.on_click(lambda _b: self._guard(self.start))
        self.submit.on_click(lambda _b: self._guard(self._submit))
        self.rating.observe(self._rating_changed, names="value")
        self.show_info.observe(lambda _c: self._show_current(), names="value")
        self.view.clear("Choose clips, type your name and press <i>Start session</i>.")
        self.widget = W.VBox([
            self.filter.widget,
            W.HBox([self.listener, self.n_clips, self.references, self.show_info]),
            self.start_button, self.view.widget,
            W.HBox([W.Label("Your rating:"), self.rating, self.submit]), self.status])

    def _guard(self, action: Callable[[], None]) -> None:
        """Run a button's action; a bad input shows in the status line instead of a traceback."""
        try:
            action()
        except (ValueError, KeyError, OSError) as e:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def _rating_changed(self, change: Any) -> None:
        self.submit.disabled = change["new"] is None or self.current is None

    @property
    def current(self) -> Stimulus | None:
        return self.playlist[self.position] if self.position < len(self.playlist) else None

    def start(self) -> list[Stimulus]:
        """Start a session for the listener over the filtered clips; returns the playlist."""
        name = self.listener.value.strip()
        if not name:
            raise ValueError("type a listener name before starting")
        if "\n" in name or "," in name:
            raise ValueError(f"listener name {name!r} must not contain commas or line breaks")
        pool = self.filter.frame()
        if pool.empty:
            raise ValueError("no clip matches the filter: widen the MOS range or clear the search")
        clips = select_clips(pool, self.n_clips.value, self.seed)
        items = playlist(clips, self.roots, self.seed, name, self.references.value)
        done = set()
        if self.resume:
            old = ratings_store.read_ratings(self.ratings_path, missing_ok=True)
            old = old[old["listener"] == name]
            done = set(zip(old["corpus"], old["path"], old["is_reference"]))
        self.playlist = [s for s in items if (s.corpus, s.path, s.is_reference) not in done]
        skipped = len(items) - len(self.playlist)
        ratings_store.record_roots(self.ratings_path.parent, {self.filter.corpus.value: self.roots[self.filter.corpus.value]})
        self.session, self.session_listener = ratings_store.new_session(), name
        self.position, self.saved = 0, 0
        self.status.value = (f"Session {self.session}: {len(self.playlist)} clips"
                             + (f" ({skipped} rated before are left out)" if skipped else ""))
        self._show_current()
        return self.playlist

    def _show_current(self) -> None:
        s = self.current
        self.rating.value = None
        if s is None:
            self.rating.disabled = self.submit.disabled = True
            if self.playlist or self.session:
                self.view.clear(f"<b>Done</b>: {self.saved} ratings saved to <code>{self.ratings_path.name}</code>. Thank you!")
            return
        self.view.show(s, f"Clip {self.position + 1} of {len(self.playlist)}", reveal=self.show_info.value)
        self.rating.disabled = False
        self.submit.disabled = True

    def rate(self, score: int) -> None:
        """Rate the current clip (1-5) and go to the next: what a listener's two clicks do."""
        self.rating.value = score
        self.submit.click()

    def _submit(self) -> None:
        s, score = self.current, self.rating.value
        if s is None or score is None:
            raise ValueError("choose a rating for the current clip first")
        ratings_store.append_rating(self.ratings_path, {
            "time": ratings_store.now(), "listener": self.session_listener, "utt_id": s.utt_id,
            "corpus": s.corpus, "path": s.path, "rating": int(score), "is_reference": s.is_reference,
            "session": self.session})
        ratings_store.copy_audio(self.ratings_path.parent, s.corpus, s.path, self.roots)
        self.saved += 1
        self.position += 1
        self.status.value = f"Session {self.session}: {self.saved} of {len(self.playlist)} rated"
        self._show_current()
        if self.current is None and self.on_done is not None:
            self.on_done()


class ClipBrowser:
    """Pick any clip of the filtered list; hear it and see its label and predictions."""

    LIMIT = 500

    def __init__(self, df: pd.DataFrame, roots: Mapping[str, Path],
                 predictions: Mapping[str, pd.DataFrame] | None = None, *, corpus: str = "",
                 split: str = "test", level_dbfs: float | None = -26.0) -> None:
        self.filter = ClipFilter(df, corpus, split)
        self.view = ClipView(df, roots, predictions, level_dbfs)
        self.clips = W.Select(options=[], rows=12, description="clips", layout=W.Layout(width="420px"))
        self.note = W.Label()
        self.clips.observe(self._selected, names="value")
        self.filter.on_change(self._refresh)
        self._refresh()
        self.widget = W.VBox([self.filter.widget, W.HBox([W.VBox([self.clips, self.note]), self.view.widget])])

    def _refresh(self) -> None:
        sel = self.filter.frame()
        labels = [f"{u}  ({m:.2f})" if pd.notna(m) else u for u, m in zip(sel["utt_id"], sel["mos"])]
        self.clips.options = list(zip(labels, sel["utt_id"]))[: self.LIMIT]
        self.note.value = f"showing {min(len(sel), self.LIMIT)} of {len(sel)}"

    def _selected(self, change: Any) -> None:
        if change["new"] is not None:
            self.select(change["new"])

    def select(self, utt_id: str) -> None:
        r = self.view.rows.loc[utt_id]
        self.view.show(Stimulus(utt_id, r["corpus"], r["path"]), "", reveal=True)


class Comparison:
    """Two models side by side: the clips they disagree on most, each with a play button."""

    def __init__(self, df: pd.DataFrame, roots: Mapping[str, Path],
                 predictions: Mapping[str, pd.DataFrame], model_a: str = "", model_b: str = "",
                 top: int = 10, level_dbfs: float | None = -26.0) -> None:
        self.predictions = dict(predictions)
        self.manifest = df.set_index("utt_id", drop=False)
        self.view = ClipView(df, roots, predictions, level_dbfs)
        names = list(self.predictions)
        for given in (model_a, model_b):
            if given and given not in names:
                raise ValueError(f"model {given!r} has no predictions; known: {', '.join(names) or 'none'}")
        self.model_a = W.Dropdown(options=names, value=model_a or (names[0] if names else None), description="model A")
        self.model_b = W.Dropdown(options=names, value=model_b or (names[1] if len(names) > 1 else None),
                                  description="model B")
        self.corpus = W.Dropdown(options=[ALL, *sorted(df["corpus"].unique())], value=ALL, description="corpus")
        self.top = W.BoundedIntText(value=top, min=1, max=1000, description="top")
        self.table = W.GridBox(layout=W.Layout(grid_template_columns="repeat(7, max-content)", grid_gap="2px 12px"))
        self.message = W.HTML()
        self.rows = pd.DataFrame()
        self.play_buttons: list[W.Button] = []
        for w in (self.model_a, self.model_b, self.corpus, self.top):
            w.observe(lambda _c: self.refresh(), names="value")
        self.refresh()
        self.widget = W.VBox([W.HBox([self.model_a, self.model_b]), W.HBox([self.corpus, self.top]),
                              self.message, self.table, self.view.widget])

    def refresh(self) -> pd.DataFrame:
        """Rebuild the table for the chosen models; returns the ranked rows."""
        a, b = self.model_a.value, self.model_b.value
        self.rows, self.play_buttons = pd.DataFrame(), []
        if len(self.predictions) < 2:
            self.message.value = (f"Comparison needs predictions of two models; found {len(self.predictions)} "
                                  "(later stages write <code>predictions.csv</code>).")
            self.table.children = ()
            return self.rows
        if a == b:
            self.message.value = "Choose two different models."
            self.table.children = ()
            return self.rows
        pa, pb = self.predictions[a], self.predictions[b]
        if self.corpus.value != ALL:
            keep = set(self.manifest.index[self.manifest["corpus"] == self.corpus.value])
            pa, pb = pa[pa["utt_id"].isin(keep)], pb[pb["utt_id"].isin(keep)]
        self.rows = disagreements(pa, pb, self.top.value, names=(a, b))
        self.message.value = (f"{len(self.rows)} clips where <b>{html.escape(a)}</b> and "
                              f"<b>{html.escape(b)}</b> differ most (diff = A - B)")
        cells: list[W.Widget] = [W.HTML(f"<b>{h}</b>") for h in ("", "utt_id", "label", "A", "B", "diff", "corpus")]
        for i, r in self.rows.iterrows():
            button = W.Button(description="▶", tooltip=f"play {r['utt_id']}", layout=W.Layout(width="40px"))
            button.on_click(lambda _b, i=i: self.play(i))
            button.disabled = r["utt_id"] not in self.manifest.index
            self.play_buttons.append(button)
            label = "–" if pd.isna(r["mos"]) else f"{r['mos']:.2f}"
            cells += [button] + [W.HTML(v) for v in (html.escape(r["utt_id"]), label, f"{r[a]:.2f}",
                                                     f"{r[b]:.2f}", f"{r['diff']:+.2f}", html.escape(str(r["corpus"])))]
        self.table.children = cells
        return self.rows

    def play(self, i: int) -> None:
        """Show and load the ``i``-th ranked clip."""
        utt = self.rows.loc[i, "utt_id"]
        r = self.manifest.loc[utt]
        self.view.show(Stimulus(utt, r["corpus"], r["path"]), f"#{i + 1}", reveal=True)


class ListenApp:
    """Stage 07's UI: listening test, clip browser and model comparison in tabs.

    With a ``listener`` name given, the listening session is started right away. ``on_finish``
    (e.g. the run's ``finish``) gets :meth:`metrics` once a listener has rated every clip of a
    session — never before a vote, so running the notebook registers nothing by itself.
    """

    def __init__(self, df: pd.DataFrame, roots: Mapping[str, Path], ratings_path: Path | str,
                 predictions: Mapping[str, pd.DataFrame] | None = None, *, corpus: str = "",
                 split: str = "test", n_clips: int = 20, seed: int = 0, listener: str = "",
                 references: bool = False, on_finish: Callable[[dict], Any] | None = None) -> None:
        predictions = dict(predictions or {})
        self.predictions = predictions
        done = None if on_finish is None else (lambda: on_finish(self.metrics()))
        self.test = ListeningTest(df, roots, ratings_path, predictions, corpus=corpus, split=split,
                                  n_clips=n_clips, seed=seed, listener=listener, references=references,
                                  on_done=done)
        self.browser = ClipBrowser(df, roots, predictions, corpus=corpus, split=split)
        self.comparison = Comparison(df, roots, predictions)
        self.widget = W.Tab(children=[self.test.widget, self.browser.widget, self.comparison.widget])
        for i, title in enumerate(("Listen & rate", "Browse clips", "Compare models")):
            self.widget.set_title(i, title)
        if listener:
            self.test.start()

    def metrics(self) -> dict[str, Any]:
        """Clips offered by the current filter, the session's size, models, and ratings so far."""
        votes = ratings_store.read_ratings(self.test.ratings_path, missing_ok=True)
        return {"corpus": self.test.filter.corpus.value, "split": self.test.filter.split.value,
                "clips_offered": int(len(self.test.filter.frame())),
                "session_clips": len(self.test.playlist), "models": len(self.predictions),
                "ratings": ratings_store.summary(votes)}
