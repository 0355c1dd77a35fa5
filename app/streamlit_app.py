"""The Streamlit page: upload a photo, pick a fast style or the Gatys path, see before/after;
or upload a short clip and play it back painted (``app.video_view``).

Only layout and session state live here; every decision (server or local, stream parsing,
finishing) is in ``app.client`` and ``app.gatys`` so tests can drive it without a browser.

Run it with ``scripts/app.sh`` (``streamlit run app/streamlit_app.py`` on 127.0.0.1); the
TorchServe address comes from ``$STYLE_SERVER_URL`` and can be changed in the sidebar.
``app/.streamlit/config.toml`` keeps a bare ``streamlit run`` on loopback too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# `streamlit run` puts this file's folder, not the repository, on sys.path (the checkout is
# core.paths.ROOT, importable only once it is there).
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402
from streamlit.runtime.uploaded_file_manager import UploadedFile  # noqa: E402

from app import client, gatys, gatys_view, licence_clean, styles, video_view  # noqa: E402

FAST, OWN_FAST, GATYS = "Fast style", "Your own style image (fast)", "Gatys (slow, iterative)"
PHOTO, VIDEO = "A photo", "A video clip"
#: The fast path's two collections: Engstrom's six (research-only weights) and the 26 (Apache-2.0).
ENGSTROM, TWENTY_SIX = "Engstrom styles (research only)", "26 styles (Apache-2.0)"
IMAGE_TYPES = ["jpg", "jpeg", "png", "webp"]
PICKER_COLUMNS = 6

#: Runs the chosen path on the uploaded photo's bytes; what the Stylize button calls.
Job = Callable[[bytes], client.Outcome]
#: What a method's inputs give the Stylize button: a label (for the file name) and the job,
#: or, until it can run, what to say under the button ("" when the page already said why).
Choice = tuple[str, Job] | str
STYLE_MISSING = "Upload a photo and a style image to start."


@st.cache_data(ttl=10, show_spinner=False)
def server_status(url: str) -> str | None:
    """Cached briefly: the page reruns on every widget change and must not ping each time."""
    return client.ping(url)


def sidebar() -> str:
    """The server URL (from ``$STYLE_SERVER_URL``) and whether it answers right now."""
    st.sidebar.header("Server")
    url = st.sidebar.text_input("TorchServe inference URL", value=client.server_url(), key="server_url",
                                help="Set the default with STYLE_SERVER_URL.")
    try:
        reason = server_status(client.normalize_url(url))
    except client.ClientError as error:
        st.sidebar.error(str(error))
        return url
    if reason is None:
        st.sidebar.success("TorchServe is reachable.")
    else:
        st.sidebar.warning(f"The server {reason}. Fast styles will run locally (same engine choice as the server); "
                           "the Gatys path needs the server.")
    return url


def style_picker() -> str:
    """Thumbnails of the paintings (when their folder exists), then the choice by name."""
    names = styles.available_styles()
    folder = styles.paintings_dir()
    for start in range(0, len(names), PICKER_COLUMNS):
        row = names[start:start + PICKER_COLUMNS]
        for column, name in zip(st.columns(PICKER_COLUMNS), row, strict=False):
            path = styles.painting_path(name, folder)
            thumb = styles.thumbnail(path) if path else None
            if thumb is not None:
                column.image(thumb, caption=name, width="stretch")
            else:
                column.caption(name)
    return st.radio("Style", names, horizontal=True, key="style")


def finishing() -> tuple[float, bool]:
    """Strength and colour preservation: the same options, and code, on both paths."""
    strength = st.slider("Strength", 0.0, 1.0, 1.0, step=0.05, key="strength",
                         help="1 = the painting, 0 = the photo; in between blends them.")
    return strength, st.checkbox("Preserve the photo's colours", key="preserve_colors")


def multistyle_picker() -> str:
    """The 26 styles as thumbnails (cut from docs/multistyle_styles.png), one to pick and an
    optional second to blend with; returns the style spec the ``multistyle`` model takes."""
    tiles = licence_clean.thumbnails()
    count = len(licence_clean.STYLE_NAMES)
    if tiles:
        for start in range(0, count, 2 * PICKER_COLUMNS):
            indices = range(start, min(start + 2 * PICKER_COLUMNS, count))
            for column, index in zip(st.columns(2 * PICKER_COLUMNS), indices, strict=False):
                column.image(tiles[index], caption=licence_clean.label(index), width="stretch")
    first = st.selectbox("Style", range(count), index=19, format_func=licence_clean.label, key="multistyle")
    second = st.selectbox("Blend with", [None, *range(count)], key="multistyle_blend",
                          format_func=lambda i: "nothing" if i is None else licence_clean.label(i))
    if second is None or second == first:
        return str(first)
    share = st.slider("Share of the second style", 0.05, 0.95, 0.5, step=0.05, key="multistyle_share")
    return f"{first}:{1 - share:.2f},{second}:{share:.2f}"


def own_style_inputs(url: str) -> Choice:
    """Any painting as the style in one pass (the ``arbitrary`` model); a hint until uploaded."""
    style_file: UploadedFile | None = st.file_uploader("Style image (a painting)", type=IMAGE_TYPES,
                                                       key="fast_style_image")
    max_side = st.slider("Longer side (px)", 64, 1024, 512, step=32, key="own_size")
    options = client.FastOptions(*finishing(), max_side)
    if style_file is None:
        return STYLE_MISSING

    def job(photo: bytes) -> client.Outcome:
        with st.spinner("Painting in the style of your image…"):
            return licence_clean.stylize_own_style(photo, style_file.getvalue(), options, url, styles.onnx_dir())

    return "own-style", job


def fast_inputs(url: str) -> Choice:
    """The style picker and size; the job calls the server, else local ONNX Runtime."""
    if st.radio("Styles", [ENGSTROM, TWENTY_SIX], horizontal=True, key="collection") == TWENTY_SIX:
        spec = multistyle_picker()
        max_side = st.slider("Longer side (px)", 64, 1024, 512, step=32, key="fast_size")
        options = client.FastOptions(*finishing(), max_side)

        def paint(photo: bytes) -> client.Outcome:
            with st.spinner(f"Painting in style {spec}…"):
                return licence_clean.stylize_multistyle(photo, spec, options, url, styles.onnx_dir())

        return "multistyle-" + spec.replace(":", "x").replace(",", "_"), paint
    style = style_picker()
    max_side = st.slider("Longer side (px)", 64, 1024, 512, step=32, key="fast_size",
                         help="The photo is downscaled to this before stylizing.")
    options = client.FastOptions(*finishing(), max_side)

    def job(photo: bytes) -> client.Outcome:
        with st.spinner(f"Painting in the style of {style}…"):
            return client.stylize_fast(photo, style, options, url, styles.onnx_dir())

    return style, job


def gatys_inputs(url: str) -> Choice:
    """The server's loss network (or why there is none), the style image and the
    optimization's size; a hint until a style image is uploaded and the server can paint."""
    found = gatys_view.description(url)
    can_paint = gatys_view.server_note(found)
    style_file: UploadedFile | None = st.file_uploader("Style image (a painting)", type=IMAGE_TYPES,
                                                       key="style_image")
    iterations = st.slider("Iterations", 1, 300, 20, key="iterations",
                           help="Each one is an L-BFGS step over the whole image: seconds on a CPU.")
    max_side = st.slider("Size (longer side, px)", 32, 1024, 256, step=32, key="gatys_size")
    options = gatys.Options(iterations, max_side, *finishing(), loss_network=found.override if found else None)
    if not can_paint:
        return ""
    if style_file is None:
        return STYLE_MISSING

    def job(photo: bytes) -> client.Outcome:
        with gatys_view.LiveView() as live:
            return gatys.stylize(photo, style_file.getvalue(), options, url, live.progress, on_start=live.start)

    return "gatys", job


def show(outcome: client.Outcome, file_name: str) -> None:
    """Which backend painted it, before and after side by side, and the PNG to download."""
    with st.container(key="result"):
        (st.success if outcome.backend == "server" else st.info)(outcome.note)
        before, after = st.columns(2)
        before.image(outcome.before, caption="Before", width="stretch")
        after.image(outcome.after, caption="After", width="stretch")
        if outcome.caption:
            st.caption(outcome.caption)
        gatys_view.loss_chart(outcome.loss_curve)
        st.download_button("Download PNG", data=outcome.png, file_name=file_name, mime="image/png",
                           on_click="ignore", key="download")


def main() -> None:
    st.set_page_config(page_title="Neural style transfer", layout="wide")
    st.title("Neural style transfer")
    url = sidebar()
    if st.radio("Paint", [PHOTO, VIDEO], horizontal=True, key="medium") == VIDEO:
        video_view.page(url)
        return
    photo: UploadedFile | None = st.file_uploader("Photo", type=IMAGE_TYPES, key="photo")
    method = st.radio("Method", [FAST, OWN_FAST, GATYS], horizontal=True, key="method")
    chosen = {FAST: fast_inputs, OWN_FAST: own_style_inputs, GATYS: gatys_inputs}[method](url)

    ready = photo is not None and not isinstance(chosen, str)
    if st.button("Stylize", type="primary", disabled=not ready, key="stylize") and ready:
        label, job = chosen
        st.session_state.pop("outcome", None)
        try:
            outcome = job(photo.getvalue())
            st.session_state["outcome"] = (photo.file_id, outcome, f"{Path(photo.name).stem}-{label}.png")
        except client.ClientError as error:
            st.error(str(error))
    elif not ready:
        hint = chosen if isinstance(chosen, str) else "Upload a photo to start."
        if hint:
            st.caption(hint)

    kept = st.session_state.get("outcome")
    if kept and photo is not None and kept[0] == photo.file_id:  # a new photo hides the old result
        show(kept[1], kept[2])


main()
