"""RTL stage: QONNX -> pipelined, multiplier-free Verilog via da4ml, bit-exact with the QONNX reference.

Public API (the CLI's ``kdhw rtl`` calls ``qonnx_to_rtl``; ``kdhw.sim.runner.simulate_rtl`` drives the result):

* ``qonnx_to_rtl(onnx_path, out_dir, latency_cutoff=None, pipeline=None, top="kdhw_top")`` -> rtl.json dict
* ``emulate(rtl_dir, x)`` -> dequantized outputs, bit-exact interpreter of the generated design
* ``pack_inputs`` / ``pack_outputs`` / ``unpack_outputs`` / ``input_codes`` / ``output_codes``: floats <->
  integer codes <-> packed port words, per rtl.json
"""

from ._build import DEFAULT_LATENCY_CUTOFF, META_FILE, load_meta, qonnx_to_rtl
from ._formats import FixedFormat
from ._io import emulate, input_codes, output_codes, pack_inputs, pack_outputs, unpack_outputs
from ._trace import SUPPORTED_OPS, trace_qonnx

__all__ = [
    "DEFAULT_LATENCY_CUTOFF", "META_FILE", "SUPPORTED_OPS", "FixedFormat", "emulate", "input_codes", "load_meta",
    "output_codes", "pack_inputs", "pack_outputs", "qonnx_to_rtl", "trace_qonnx", "unpack_outputs",
]
