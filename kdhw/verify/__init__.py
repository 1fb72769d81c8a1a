"""Bit-exactness: every level (C-sim, RTL emulator, simulator) against the QONNX reference."""
