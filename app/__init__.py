"""The Streamlit front end. ``client`` (server calls, the fast path and its local fallback),
``local`` (ONNX Runtime in-process), ``gatys`` (the streamed optimization) and ``styles``
(what the picker offers) are plain functions; ``streamlit_app`` is the thin page on top."""
