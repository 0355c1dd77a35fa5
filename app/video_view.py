"""The page's video mode: a short clip in, the painted clip played back and offered for download.

Layout only; the work is ``app.client.stylize_video`` (the server, else this machine with
the server's stylizer and ``core.video``). A clip the server refuses (unreadable, too long
for one request) shows the server's reason, which names the CLI for long clips.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from app import client, styles

CLIP_TYPES = ["mp4", "mov", "webm", "mkv", "avi"]


def page(url: str) -> None:
    """Uploader, style and stabilize; the Paint button; the last result for this clip."""
    clip: UploadedFile | None = st.file_uploader("Video clip (a few seconds)", type=CLIP_TYPES, key="clip")
    style = st.radio("Style", styles.available_styles(), horizontal=True, key="video_style")
    stabilize = st.slider("Stabilize", 0.0, 1.0, 0.6, step=0.05, key="stabilize",
                          help="0 paints each frame alone; 1 holds the painting steady along the motion.")
    if clip is None:
        st.caption("Upload a clip to start. Long clips: python -m stylize clip.mp4 -o out/ --style udnie")
    if st.button("Paint the clip", type="primary", disabled=clip is None, key="paint_clip") and clip is not None:
        st.session_state.pop("video_outcome", None)
        try:
            with st.spinner(f"Painting every frame in the style of {style}…"):
                outcome = client.stylize_video(clip.getvalue(), style, stabilize, url, styles.onnx_dir())
            st.session_state["video_outcome"] = (clip.file_id, outcome, f"{Path(clip.name).stem}-{style}.{outcome.fmt}")
        except client.ClientError as error:
            st.error(str(error))
    kept = st.session_state.get("video_outcome")
    if kept and clip is not None and kept[0] == clip.file_id:  # a new clip hides the old result
        show(kept[1], kept[2])


def show(outcome: client.VideoOutcome, file_name: str) -> None:
    with st.container(key="video_result"):
        (st.success if outcome.backend == "server" else st.info)(outcome.note)
        st.video(outcome.data, format=outcome.media_type)
        st.download_button(f"Download {outcome.fmt.upper()}", data=outcome.data, file_name=file_name,
                           mime=outcome.media_type, on_click="ignore", key="download_clip")
