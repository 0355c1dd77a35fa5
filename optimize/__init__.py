"""Gatys et al. (2015) iterative style transfer, served as the ``gatys`` TorchServe model.

``transfer`` (the optimization), ``losses`` (the objective, on the shared loss network in
``lossnet``), ``serving`` (limits, request parameters and streamed messages), ``service``
(one request from parsed fields to the reply, for any server) and ``archive`` (builds
``gatys.mar``; a build tool, not packed into it). ``python -m optimize`` runs it offline;
``python -m bench.gatys_speed`` times it.
"""
