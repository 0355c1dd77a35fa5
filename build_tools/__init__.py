"""Build-time tools shared by the builders of every model family: ``archive`` packs a served
model into a TorchServe ``.mar`` (handler, the ``core`` modules it imports, model file, model
config).

Neither serving code nor one family's builder: ``export`` (the fast styles, multistyle,
arbitrary), ``optimize.archive`` (gatys) and ``train.export`` all package through here, so no
builder imports another's package to reach the archiver. It depends on ``core`` only.
"""
