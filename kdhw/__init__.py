"""kdhw: float teacher -> distilled fixed-point student -> QONNX -> hls4ml / Verilog, proven bit-exact."""

__version__ = "0.1.0"
