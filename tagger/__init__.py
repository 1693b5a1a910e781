"""tagger: analyse a music library with ONNX taggers, store the results, write tags back safely."""

__version__ = "0.1.0"
