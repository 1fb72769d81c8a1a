"""cocotb testbenches (``tb_student``: parallel tops, ``tb_stream``: AXI4-Stream tops) and the simulator runner
for the Verilog that ``kdhw rtl`` generates."""

from .runner import SIMULATORS, build_design, simulate_rtl, simulate_stream

__all__ = ["SIMULATORS", "build_design", "simulate_rtl", "simulate_stream"]
