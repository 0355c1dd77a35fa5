"""Gatys et al. (2015) iterative style transfer, served as the ``gatys`` TorchServe model.

``vgg`` (loss network and its weights), ``losses`` (the objective), ``transfer`` (the
optimization), ``serving`` (limits and messages for ``handlers/gatys.py``), ``archive``
(builds ``gatys.mar``); ``python -m optimize`` runs it offline, ``python -m
optimize.benchmark`` times it.
"""
