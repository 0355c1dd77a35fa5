"""The page's Gatys method: the server's loss network named before the click, the running
optimization shown live (progress, iteration, level, time left, previews, loss curve), and
the loss curve kept with the result.

Streamlit code only; the protocol is ``app.gatys``'s. Everything the live view draws sits in
one placeholder that is emptied when the request ends, however it ends, so no progress bar
or "waiting" text outlives its request.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from app import client, gatys

#: Shown when the server describes no usable loss network: what an operator does about it.
OPERATOR_FIX = ("An operator fixes this on the server: supply ImageNet VGG weights (for example set "
                "`STYLE_VGG16_WEIGHTS` or `STYLE_VGG19_WEIGHTS` to the weights file, as each reason below "
                "says), then restart TorchServe.")
PREVIEW_WIDTH = 256
CHART_HEIGHT = 200


@st.cache_data(ttl=30, show_spinner=False)
def description(url: str) -> gatys.Description | None:
    """What the server at inference URL ``url`` can paint with; None when unknown. Cached: the
    page reruns on every widget change, and the server's networks change only when an
    operator restarts it."""
    try:
        return gatys.describe(client.management_url(url))
    except client.ClientError:  # a malformed URL: the sidebar already says so
        return None


def server_note(found: gatys.Description | None) -> bool:
    """Says which loss network the server will paint with, or that it has none (then the
    Stylize button stays off); says nothing when the server did not describe itself.
    Returns whether the server can paint, as far as it is known."""
    if found is None:
        return True
    chosen = found.chosen
    if chosen is None:
        reasons = "".join(f"\n- **{network}**: {_plain(network.reason or 'not available')}"
                          for network in found.networks)
        st.warning(f"The server has no loss network, so the Gatys method cannot run there. {OPERATOR_FIX}{reasons}",
                   icon=":material/block:")
        return False
    precision = f" in {found.precision}" if found.precision else ""
    fallback = (f" (its default, {found.default.upper()}, is not available)"
                if found.default and found.default != chosen.name else "")
    st.info(f"The server will paint with the loss network {chosen}{precision}{fallback}.", icon=":material/info:")
    return True


def _plain(text: str) -> str:
    """The server's words in Markdown: a ``$`` (``$TORCH_HOME``) must not start a formula."""
    return text.replace("$", "\\$")


def loss_chart(curve: Sequence[tuple[int, float]], target: DeltaGenerator | None = None) -> None:
    """Total loss per iteration, log scale (the points the server streamed)."""
    points = [(iteration, loss) for iteration, loss in curve if loss > 0]  # a log scale has no room for 0
    if not points:
        return
    spec = {"mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "iteration", "type": "quantitative", "title": "iteration",
                               "axis": {"format": "d", "tickMinStep": 1}},
                         "y": {"field": "loss", "type": "quantitative", "scale": {"type": "log"},
                               "title": "total loss (log scale)"}}}
    data = {"iteration": [iteration for iteration, _ in points], "loss": [loss for _, loss in points]}
    (target or st).vega_lite_chart(data, spec, width="stretch", height=CHART_HEIGHT,
                                   alt="Total loss per iteration, log scale")


def progress_text(progress: gatys.Progress, budget_s: float | None) -> str:
    """``Iteration 7/20 (level 1/2), 3.1 s, loss 1.2e+04, about 6 s left``."""
    loss = "" if progress.loss is None else f", loss {progress.loss:.4g}"
    eta = progress.eta_s(budget_s)
    if eta is None or progress.fraction >= 1:
        left = ""
    else:
        left = f", about {eta:.0f} s left" if eta >= 1 else ", less than a second left"
    return (f"Iteration {progress.iteration}/{progress.iterations} (level {progress.level}/{progress.levels}), "
            f"{progress.elapsed_s:.1f} s{loss}{left}")


class LiveView:
    """The request in flight: a progress bar with its text, the painter, the latest preview
    and the loss curve so far. A context manager: leaving it empties all of it."""

    def __init__(self) -> None:
        self._area = st.empty()
        box = self._area.container()
        self._bar = box.progress(0.0, text="Waiting for the server…")
        self._painter = box.empty()
        left, right = box.columns([1, 2])
        self._preview, self._chart = left.empty(), right.empty()
        self._budget_s: float | None = None
        self._curve: list[tuple[int, float]] = []

    def start(self, start: gatys.Start) -> None:
        self._budget_s = start.budget_s
        levels = "level" if start.levels == 1 else "levels"
        self._bar.progress(0.0, text=f"Started: {start.iterations} iterations over {start.levels} {levels}…")
        if str(start.painter):
            self._painter.caption(f"Painting with {start.painter}")

    def progress(self, progress: gatys.Progress) -> None:
        self._bar.progress(progress.fraction, text=progress_text(progress, self._budget_s))
        if progress.preview is not None:
            self._preview.image(progress.preview, caption=f"Preview, iteration {progress.iteration}",
                                width=PREVIEW_WIDTH)
        if progress.loss is not None:
            self._curve.append((progress.iteration, progress.loss))
            loss_chart(self._curve, self._chart)

    def close(self) -> None:
        self._area.empty()

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
