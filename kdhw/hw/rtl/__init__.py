"""RTL stage: QONNX -> multiplier-free Verilog via da4ml, bit-exact with the QONNX reference.

Two forms (``mode``): ``parallel``, one fully unrolled pipelined block (every input and output in parallel,
a new input every cycle); ``stream``, an AXI4-Stream core that moves one position per beat through line
buffers and one datapath per layer (``_stream_plan``, ``_stream_hdl``, ``_stream_time``, ``_stream_emu``).

Public API (the CLI's ``kdhw rtl`` calls ``qonnx_to_rtl``; ``kdhw.verify.sim.runner.simulate_rtl`` drives the result):

* ``qonnx_to_rtl(onnx_path, out_dir, latency_cutoff=None, pipeline=None, top="kdhw_top", mode="parallel", ...,
  tlast=None)`` -> rtl.json dict; ``rtl_options(cfg.rtl)`` gives its keyword arguments from a config.  Every
  module of a design starts with ``top`` (da4ml's helpers too), every Verilog file has one timescale and
  ``default_nettype none``, and the text is ``verilator --lint-only -Wall`` clean (``_hdl_text``)
* ``tlast_mode(meta)``: ``required`` / ``ignore`` of a stream design (None for parallel)
* ``emulate(rtl_dir, x)`` -> dequantized outputs, bit-exact interpreter of the generated design (either mode)
* ``pack_inputs`` / ``pack_outputs`` / ``unpack_outputs`` / ``input_codes`` / ``output_codes``: floats <->
  integer codes <-> packed port words, per rtl.json (parallel ports); ``stream_in_words`` /
  ``stream_out_words`` / ``unpack_stream_words``: the AXI4-Stream beats of a stream design
"""

from ._build import (
    DEFAULT_LATENCY_CUTOFF,
    META_FILE,
    MODEL_FILE,
    MODES,
    DEFAULT_TOP,
    STREAM_OPTIONS,
    load_meta,
    qonnx_to_rtl,
    rtl_options,
    tlast_mode,
)
from ._formats import FixedFormat, edge_vectors
from ._io import emulate, input_codes, output_codes, pack_inputs, pack_outputs, unpack_outputs
from ._stream_io import stream_in_words, stream_out_words, unpack_stream_words
from ._trace import SUPPORTED_OPS, trace_qonnx

__all__ = [
    "DEFAULT_LATENCY_CUTOFF", "DEFAULT_TOP", "META_FILE", "MODEL_FILE", "MODES", "STREAM_OPTIONS", "SUPPORTED_OPS",
    "FixedFormat", "edge_vectors", "emulate", "input_codes", "load_meta", "output_codes", "pack_inputs", "pack_outputs",
    "qonnx_to_rtl", "rtl_options", "stream_in_words", "stream_out_words", "tlast_mode", "trace_qonnx", "unpack_outputs",
    "unpack_stream_words",
]
