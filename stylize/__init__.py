"""``python -m stylize``: paint a photo or a folder of photos offline, no server needed.

The CLI decodes with ``core.codec`` and finishes (strength, colour preservation) with the
handler's own ``finish``, so a file painted here matches what ``POST /predictions/<style>``
returns for the same parameters.
"""
