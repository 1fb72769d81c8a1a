"""cocotb testbench and simulator runner for the Verilog that ``kdhw rtl`` generates."""

from .runner import SIMULATORS, build_design, simulate_rtl

__all__ = ["SIMULATORS", "build_design", "simulate_rtl"]
