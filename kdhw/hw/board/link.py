"""Host side of the board link: frames, CRC-8, a resynchronising reply parser, and ``Link``, the driver.

The specification is ``docs/board.md`` ("Link protocol"); the hardware side is ``kdhw_link`` in ``top.py``.
The frame helpers here are pure functions of bytes, so the same code frames the requests of the board-level
simulation (``kdhw.verify.sim.tb_board``), parses the replies the simulated TX pin sends, and talks to a real
board through pyserial: what the simulation proves about the protocol is proved about this code too.

Why each part exists:

* SYNC bytes let the receiver find the start of a frame after garbage (a reset mid-frame, a line glitch);
* SEQ lets the host pair every reply with its request, so a lost frame shows up as a missing SEQ and never
  as a later frame's answer given to the wrong request;
* LEN is checked against the core's request length before any payload is accepted;
* CRC-8 (polynomial 0x07) catches every single-byte corruption and every burst of up to 8 bits; a request
  reaches the core only after its CRC has passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kdhw.errors import CheckFailed, InputError

from .top import REP_SYNC, REQ_SYNC, ST_BAD_LEN, ST_OK, STATUS_NAMES

DEFAULT_BAUD = 115200


def crc8(data: bytes | bytearray | list[int], crc: int = 0) -> int:
    """CRC-8/SMBUS: polynomial x^8 + x^2 + x + 1 (0x07), initial 0, MSB first, no final XOR."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode_request(seq: int, payload: bytes) -> bytes:
    """SYNC(A5 5A) SEQ LEN_LO LEN_HI payload CRC8(SEQ..payload)."""
    if not 0 <= seq <= 255:
        raise InputError(f"seq = {seq} must be a byte (0..255)")
    if len(payload) > 0xFFFF:
        raise InputError(f"payload of {len(payload)} bytes: at most 65535 fit the LEN field")
    body = bytes([seq, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    return bytes(REQ_SYNC) + body + bytes([crc8(body)])


def encode_reply(seq: int, status: int, payload: bytes = b"") -> bytes:
    """What the board sends: SYNC(5A A5) SEQ STATUS LEN_LO LEN_HI payload CRC8(SEQ..payload)."""
    body = bytes([seq & 0xFF, status, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    return bytes(REP_SYNC) + body + bytes([crc8(body)])


@dataclass
class Reply:
    seq: int
    status: int
    payload: bytes

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, f"0x{self.status:02x}")


@dataclass
class ReplyParser:
    """Incremental parser of the board's reply stream: ``feed(bytes)`` -> complete replies.

    Bytes outside a frame are skipped until a SYNC; a frame whose CRC fails, or whose LEN exceeds
    ``max_len``, is dropped (counted in ``dropped``) and the search restarts one byte after its SYNC, so a
    SYNC pattern inside a damaged frame cannot hide the next good one.
    """

    max_len: int = 0xFFFF
    buf: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    skipped: int = 0

    def feed(self, data: bytes) -> list[Reply]:
        self.buf.extend(data)
        out = []
        while True:
            i = self.buf.find(bytes(REP_SYNC))
            if i < 0:
                keep = 1 if self.buf[-1:] == bytes(REP_SYNC[:1]) else 0
                self.skipped += len(self.buf) - keep
                del self.buf[:len(self.buf) - keep]
                return out
            if i:
                self.skipped += i
                del self.buf[:i]
            if len(self.buf) < 6:
                return out
            n = self.buf[4] | (self.buf[5] << 8)
            if n > self.max_len:
                self.dropped += 1
                del self.buf[:1]
                continue
            if len(self.buf) < 7 + n:
                return out
            body = bytes(self.buf[2:6 + n])
            if crc8(body) != self.buf[6 + n]:
                self.dropped += 1
                del self.buf[:1]
                continue
            out.append(Reply(body[0], body[1], body[4:]))
            del self.buf[:7 + n]


# ------------------------------------------------------------------------------------------ payload <-> core


def _bytes_per_beat(width: int) -> int:
    return (int(width) + 7) // 8


def request_payloads(meta: dict[str, Any], codes: np.ndarray) -> list[bytes]:
    """(N, n_inputs) input codes -> one request payload per row: the row's input beats (rtl.json's layout),
    each beat as ceil(tdata width / 8) little-endian bytes."""
    from kdhw.hw.rtl import stream_in_words

    nb = int(meta["stream"]["beats_in"])
    bpb = _bytes_per_beat(meta["ports"]["s_axis_tdata"]["width"])
    words = stream_in_words(meta, codes)
    return [b"".join(w.to_bytes(bpb, "little") for w in words[r * nb:(r + 1) * nb]) for r in range(len(codes))]


def reply_payloads(meta: dict[str, Any], out_codes: np.ndarray) -> list[bytes]:
    """(N, n_outputs) expected output codes -> the OK reply payload of each row (the core's output beats)."""
    from kdhw.hw.rtl import stream_out_words

    nbo = int(meta["stream"]["beats_out"])
    bpb = _bytes_per_beat(meta["ports"]["m_axis_tdata"]["width"])
    words = stream_out_words(meta, out_codes)
    return [b"".join(w.to_bytes(bpb, "little") for w in words[r * nbo:(r + 1) * nbo]) for r in range(len(out_codes))]


def payload_words(meta: dict[str, Any], payload: bytes) -> list[int]:
    """An OK reply payload -> the core's output beats (words)."""
    bpb = _bytes_per_beat(meta["ports"]["m_axis_tdata"]["width"])
    return [int.from_bytes(payload[i:i + bpb], "little") for i in range(0, len(payload), bpb)]


def request_len(meta: dict[str, Any]) -> int:
    return int(meta["stream"]["beats_in"]) * _bytes_per_beat(meta["ports"]["s_axis_tdata"]["width"])


def reply_len(meta: dict[str, Any]) -> int:
    return int(meta["stream"]["beats_out"]) * _bytes_per_beat(meta["ports"]["m_axis_tdata"]["width"])


def frames_per_s(meta: dict[str, Any], baud: int) -> float:
    """Stop-and-wait rate the link allows: one request and its reply per frame, 10 bits per byte (8N1)."""
    return baud / (10.0 * (6 + request_len(meta) + 7 + reply_len(meta)))


def _core_meta(rtl: str | Path | dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
    from kdhw.hw.rtl import load_meta

    if isinstance(rtl, dict):
        return rtl, None
    p = Path(rtl)
    if (p / "board.json").is_file() and (p / "core" / "rtl.json").is_file():
        p = p / "core"  # a board folder written by kdhw board: its core's rtl.json
    meta = load_meta(p)
    if meta.get("mode") != "stream":
        raise InputError(f"{p}: a parallel-mode core; the board link drives stream cores (kdhw rtl --mode stream)")
    return meta, p


class Inference(NamedTuple):
    """``logits``: (N, n_outputs) dequantized, or None when the core sends the class only; ``classes``: (N,)
    (the core's own class beat, else the argmax of the logits with ties to the lowest index, as the core's)."""

    logits: np.ndarray | None
    classes: np.ndarray


class Link:
    """A board running a ``kdhw board`` bitstream, reached over its USB serial port.

    ``Link(port, rtl)``: ``port`` a serial device (``/dev/ttyUSB1``, ``/dev/ttyACM0``, ``COM5``, or a pty in
    tests); ``rtl`` the board folder, its ``core/`` or the stream RTL folder the bitstream was built from
    (its ``rtl.json`` says how inputs pack into beats and how output beats unpack).  ``infer(x)`` quantizes
    ``x`` exactly as the QONNX input quantizer does, sends one request per row, and waits for each reply
    (stop-and-wait: the rate is ``frames_per_s``).  A NAK (BAD_CHECK, TIMEOUT, BUSY) or a missing reply is
    retried up to ``retries`` times with the same SEQ; BAD_LEN means the bitstream is not built from this
    ``rtl`` and raises ``InputError``.  ``ser``: an already open pyserial-like object (read/write/timeout).
    """

    def __init__(self, port: str | None, rtl: str | Path | dict[str, Any], baud: int = DEFAULT_BAUD,
                 timeout: float = 1.0, retries: int = 3, ser: Any = None) -> None:
        self.meta, _ = _core_meta(rtl)
        self.timeout, self.retries = float(timeout), int(retries)
        if ser is None:
            try:
                import serial
            except ImportError:
                raise InputError("kdhw.hw.board.Link needs pyserial: pip install 'pyserial>=3.5'") from None
            try:
                ser = serial.Serial(port, baudrate=int(baud), bytesize=8, parity="N", stopbits=1, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as e:
                raise InputError(f"cannot open serial port {port!r}: {e}") from None
        self.ser = ser
        self.parser = ReplyParser(max_len=reply_len(self.meta))
        self.seq = 0
        self.stats = {"frames": 0, "retries": 0, "naks": {}, "stale_replies": 0}

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _await_reply(self, seq: int) -> Reply | None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            data = self.ser.read(max(1, getattr(self.ser, "in_waiting", 0) or 1))
            for rep in self.parser.feed(data) if data else []:
                if rep.seq == seq:
                    return rep
                self.stats["stale_replies"] += 1  # an answer to an earlier, already retried request
        return None

    def transact(self, payload: bytes) -> bytes:
        """One request -> the OK reply's payload (the core's output beats as bytes), with retries."""
        if len(payload) != request_len(self.meta):
            raise InputError(f"payload of {len(payload)} bytes; this core takes {request_len(self.meta)}")
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFF
        frame = encode_request(seq, payload)
        last = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.ser.write(frame)
            rep = self._await_reply(seq)
            if rep is None:
                last = f"no reply within {self.timeout:g} s"
                continue
            if rep.status == ST_OK and len(rep.payload) == reply_len(self.meta):
                self.stats["frames"] += 1
                return rep.payload
            name = rep.status_name
            self.stats["naks"][name] = self.stats["naks"].get(name, 0) + 1
            if rep.status == ST_BAD_LEN:
                raise InputError(f"the board answered BAD_LEN to a {len(payload)}-byte request: its bitstream was "
                                 "not built from this rtl.json")
            last = f"reply {name}"
        raise CheckFailed(f"board link: request SEQ {seq} failed {self.retries + 1} times ({last})")

    def infer(self, x: np.ndarray) -> Inference:
        """Float inputs (N, *input_shape) or one row (input_shape) -> ``Inference(logits, classes)``."""
        from kdhw.hw.rtl import input_codes, unpack_stream_words
        from kdhw.hw.rtl._formats import FixedFormat
        from kdhw.hw.rtl._stream_emu import argmax_lowest

        x = np.asarray(x)
        shape = tuple(self.meta.get("input_shape", [self.meta["n_inputs"]]))
        if x.shape == shape or (x.ndim == 1 and x.size == int(self.meta["n_inputs"])):
            x = x[None]
        codes = input_codes(self.meta, x)
        words: list[int] = []
        for p in request_payloads(self.meta, codes):
            words += payload_words(self.meta, self.transact(p))
        logits, classes = unpack_stream_words(self.meta, words)
        fout = FixedFormat.from_json(self.meta["output_format"])
        if classes is None:
            classes = argmax_lowest(logits)
        return Inference(None if logits is None else logits.astype(np.float64) * fout.scale, classes)
