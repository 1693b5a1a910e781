"""Turn trained PyTorch music taggers into self-describing ONNX files for ``tagger``.

Public API::

    from exporter import ModelCard, export_onnx
    export_onnx(my_module, ModelCard(id=..., version=..., labels=[...], sample_rate=16000,
                                     window=48128, hop=47872, embedding_dim=200), "my-model.onnx")

``my_module(waveform[B, window]) -> (tags[B, n_labels], embedding[B, dim])``. The export is checked in
onnxruntime against torch on random and real audio before the file is written.
"""
from .export import (
    METADATA_KEY,
    ExportError,
    ModelCard,
    export_onnx,
    read_card,
    verify_onnx,
)

__all__ = ["METADATA_KEY", "ExportError", "ModelCard", "export_onnx", "read_card", "verify_onnx"]
