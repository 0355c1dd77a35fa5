"""Training new fast styles (Johnson et al. 2016) for the served ``TransformerNet``.

``dataset`` (content photos and the style image, read through ``core.codec``), ``losses``
(content, Gram-matrix style and total-variation terms on the shared frozen VGG of
``lossnet``), ``distributed`` (one process or ``torchrun`` DDP, device and mixed precision
picked at run time), ``checkpoint`` (resumable, atomic, rank-0 only), ``loop`` (the training
loop), ``export`` (trained weights -> checked ONNX -> TorchServe ``.mar``), ``measures``
(checks that do not use the loss network: did a result move toward the painting?) and
``demo`` (a few-minute run with real weights on real photos). ``python -m train`` is the
command line.
"""
