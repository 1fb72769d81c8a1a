"""A board around a stream core: the Verilog board top with a framed UART link on the catalog's real pins
(``top``), its constraints (``constraints``), the open flow to a bitstream (``flow``) and the host driver
(``Link``, ``link``).

What builds and proves a board end to end is the ``kdhw board`` flow, ``kdhw.flows.board.build_board``: it
sits above this stage and ``kdhw.verify.board_sim`` (the board-level simulation), as every flow does.
``docs/board.md`` has the protocol, the pins and their sources.
"""

from __future__ import annotations

from .link import DEFAULT_BAUD, Inference, Link, frames_per_s, reply_len, request_len

__all__ = ["DEFAULT_BAUD", "Inference", "Link", "frames_per_s", "reply_len", "request_len"]
