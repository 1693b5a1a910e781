"""Training the seed architectures from audio (``python -m exporter train ARCH``).

``archs`` holds the networks, ``data`` the example sources and decoding, ``loop`` the seeded, resumable,
early-stopped training that ends in a verified ONNX plug-in with a report. Needs torch (the ``export``
or ``train`` extra); the runtime that uses the result needs only onnxruntime.
"""
