"""Conversion of the networks in ``engines.models`` to ONNX graphs and TensorRT engines, with
validation against the PyTorch modules. It reuses the network definitions and never copies them."""
