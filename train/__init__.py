"""Training new fast styles (Johnson et al. 2016) for the served ``TransformerNet``.

``dataset`` (content photos and the style image, read through ``core.codec``),
``loss_network`` (the frozen VGG16/VGG19 feature taps and their verified ImageNet weights),
``losses`` (content, Gram-matrix style and total-variation terms), ``distributed`` (one
process or ``torchrun`` DDP, device and mixed precision picked at run time), ``checkpoint``
(resumable, atomic, rank-0 only), ``loop`` (the training loop) and ``export`` (trained
weights -> checked ONNX -> TorchServe ``.mar``). ``python -m train`` is the command line.
"""
