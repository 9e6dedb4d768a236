"""Custom PyTorch ops of the renderer. Importing this package registers them
(``torch.ops.avatarcam.*``)."""
from .grid_sample3d import (
    ONNX_OPSET,
    custom_grid_sample_enabled,
    grid_sample_3d,
    grid_sample_3d_or_reference,
    onnx_translation_table,
    reference_grid_sample_3d,
    register_torchscript_onnx_symbolic,
    set_custom_grid_sample,
    triton_available,
    use_custom_grid_sample,
)

__all__ = [
    "ONNX_OPSET",
    "custom_grid_sample_enabled",
    "grid_sample_3d",
    "grid_sample_3d_or_reference",
    "onnx_translation_table",
    "reference_grid_sample_3d",
    "register_torchscript_onnx_symbolic",
    "set_custom_grid_sample",
    "triton_available",
    "use_custom_grid_sample",
]
