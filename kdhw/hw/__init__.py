"""Hardware: QONNX export, the hls4ml project, RTL, estimate, open synthesis, board fit and report."""
