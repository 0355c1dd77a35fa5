"""The KServe predictor: this project's models on KServe's own model server (Open Inference Protocol v2).

``python -m server kserve`` runs it (``predictor.cli``); ``predictor.models`` are the
``kserve.Model`` classes, ``predictor.protocol`` the v2 tensors and parameters,
``predictor.server`` the model server, ``predictor.archives`` the models read from
``model_store/*.mar``.
"""
