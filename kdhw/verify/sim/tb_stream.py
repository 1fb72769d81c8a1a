"""cocotb testbench for a kdhw stream-mode top (AXI4-Stream in and out, ``aresetn``).

Driven by ``kdhw.verify.sim.runner.simulate_rtl``, which writes into ``$KDHW_SIM_DIR``: ``config.json``,
``frames.hex`` (input beats, ``beats_in`` lines per frame), ``expected.hex`` (output beats, ``beats_out``
lines per frame) and ``extra.json`` (frames for the tlast test).  Each test writes ``<test>.json`` back.
``config.json``'s ``tlast`` is the design's rtl.tlast: ``tlast_errors`` (malformed frames repaired) runs for
``required``; ``tlast_ignored`` (s_axis_tlast tied low, then high) runs where ``tied_tlast`` is set.

Signals are driven just after the falling edge and sampled once they settle (ReadOnly), so what is read is
exactly what the next rising edge sees: a beat moves on that edge when tvalid and tready were both high.
The bench is an AXI4-Stream source that never waits for tready before raising tvalid and holds its beat
until it moves, and a sink whose tready is random; it checks the core's master side keeps tdata/tlast
stable while stalled and never drops tvalid without a transfer.
"""

from __future__ import annotations

import json
import random
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from tb_common import CLOCK_NS, MAX_REPORTED_MISMATCHES
from tb_common import setup as _setup
from tb_common import words as _words


def _val(sig: Any) -> int | None:
    v = sig.value
    return int(v) if v.is_resolvable else None


class Bench:
    def __init__(self, dut: Any, cfg: dict[str, Any], seed: int) -> None:
        self.dut, self.cfg = dut, cfg
        self.rng = random.Random(seed)
        self.cycle = 0
        self.axi_violations: list[str] = []
        self._stalled: tuple[int, int] | None = None  # (tdata, tlast) of a beat offered and not taken

    async def start(self) -> None:
        """Clock (each cocotb test starts its own: tasks end with their test) and a reset."""
        cocotb.start_soon(Clock(self.dut.clk, CLOCK_NS, unit="ns").start())
        self.dut.s_axis_tvalid.value = 0
        self.dut.s_axis_tdata.value = 0
        self.dut.s_axis_tlast.value = 0
        self.dut.m_axis_tready.value = 0
        await self.reset(3)

    async def reset(self, cycles: int) -> list[tuple[int | None, int | None]]:
        """Hold aresetn low for ``cycles`` rising edges; returns (m_axis_tvalid, s_axis_tready) seen meanwhile."""
        await FallingEdge(self.dut.clk)
        self.dut.aresetn.value = 0
        self.dut.s_axis_tvalid.value = 0
        seen = []
        for _ in range(cycles):
            await ReadOnly()
            seen.append((_val(self.dut.m_axis_tvalid), _val(self.dut.s_axis_tready)))
            await FallingEdge(self.dut.clk)
        self.dut.aresetn.value = 1
        self._stalled = None
        return seen

    async def run(self, beats: list[tuple[int, int]], n_out_frames: int, gap_p: float = 0.0, stall_p: float = 0.0,
                  max_cycles: int = 10**7, ready: bool = True, stop_after_in: int | None = None
                  ) -> tuple[list[int], list[tuple[int, int]], list[int]]:
        """Offer ``beats`` (word, tlast) in order and collect output beats until ``n_out_frames`` frames ended
        (tlast) or, with ``stop_after_in``, until that many input beats moved.  Returns (cycles at which each
        input beat moved, output (word, tlast) beats, cycles at which each output beat moved)."""
        dut = self.dut
        i = 0
        last_move = self.cycle
        in_cycles: list[int] = []
        outs: list[tuple[int, int]] = []
        out_cycles: list[int] = []
        frames_out = 0
        offered = False
        for _ in range(max_cycles):
            await FallingEdge(dut.clk)
            self.cycle += 1
            if not offered and i < len(beats) and self.rng.random() >= gap_p:
                offered = True
            if offered:
                dut.s_axis_tdata.value = beats[i][0]
                dut.s_axis_tlast.value = beats[i][1]
            dut.s_axis_tvalid.value = int(offered)
            m_ready = int(ready and self.rng.random() >= stall_p)
            dut.m_axis_tready.value = m_ready
            await ReadOnly()
            s_ready = _val(dut.s_axis_tready)
            m_valid = _val(dut.m_axis_tvalid)
            m_data, m_last = _val(dut.m_axis_tdata), _val(dut.m_axis_tlast)
            if self._stalled is not None:
                if m_valid != 1:
                    self.axi_violations.append(f"cycle {self.cycle}: m_axis_tvalid dropped without a transfer")
                elif (m_data, m_last) != self._stalled:
                    self.axi_violations.append(f"cycle {self.cycle}: m_axis_tdata/tlast changed while stalled")
            self._stalled = None
            if offered and s_ready == 1:
                in_cycles.append(self.cycle)
                last_move = self.cycle
                i += 1
                offered = False
            if m_valid == 1:
                if m_data is None or m_last is None:
                    self.axi_violations.append(f"cycle {self.cycle}: m_axis_tdata or tlast is X while tvalid")
                if m_ready:
                    outs.append((m_data if m_data is not None else -1, m_last or 0))
                    out_cycles.append(self.cycle)
                    last_move = self.cycle
                    if m_last == 1:
                        frames_out += 1
                else:
                    self._stalled = (m_data, m_last)
            elif m_valid is None:
                self.axi_violations.append(f"cycle {self.cycle}: m_axis_tvalid is X")
            if stop_after_in is not None and len(in_cycles) >= stop_after_in:
                break
            if stop_after_in is None and frames_out >= n_out_frames and i >= len(beats):
                break
            if ready and self.cycle - last_move > self.cfg["idle_limit"]:
                self.axi_violations.append(f"cycle {self.cycle}: no beat moved for {self.cfg['idle_limit']} cycles "
                                           "(deadlock)")
                break
        await FallingEdge(dut.clk)
        dut.s_axis_tvalid.value = 0
        self.cycle += 1
        return in_cycles, outs, out_cycles


def _frame_beats(frames: list[int], cfg: dict[str, Any], idx: list[int]) -> list[tuple[int, int]]:
    nb = cfg["beats_in"]
    out = []
    for f in idx:
        for b in range(nb):
            out.append((frames[f * nb + b], int(b == nb - 1)))
    return out


def _compare(cfg: dict[str, Any], got: list[tuple[int, int]], expected: list[int], idx: list[int]
             ) -> tuple[int, list[dict[str, Any]]]:
    """Exact frames and the first mismatches; also checks tlast sits on each frame's last beat."""
    nbo = cfg["beats_out"]
    exact, bad = 0, []
    for k, f in enumerate(idx):
        beats = got[k * nbo:(k + 1) * nbo]
        want = expected[f * nbo:(f + 1) * nbo]
        lasts = [b[1] for b in beats]
        ok = len(beats) == nbo and [b[0] for b in beats] == want and lasts == [0] * (nbo - 1) + [1]
        if ok:
            exact += 1
        elif len(bad) < MAX_REPORTED_MISMATCHES:
            bad.append({"row": f, "got": [hex(b[0]) for b in beats], "tlast": lasts,
                        "expected": [hex(w) for w in want]})
    return exact, bad


@cocotb.test()
async def timing(dut: Any) -> None:
    """One frame into an idle core, then frames back to back: latency and II equal rtl.json's."""
    d, cfg = _setup()
    frames, expected = _words(d / "frames.hex"), _words(d / "expected.hex")
    n = cfg["rows"]
    b = Bench(dut, cfg, cfg["seed"])
    await b.start()
    ins, outs, out_cycles = await b.run(_frame_beats(frames, cfg, [0]), 1)
    latency = out_cycles[-1] - ins[0] if outs and ins else None
    exact1, bad1 = _compare(cfg, outs, expected, [0])
    await b.reset(2)
    k = cfg["ii_frames"]
    idx = [f % n for f in range(k)]
    ins, outs, _ = await b.run(_frame_beats(frames, cfg, idx), k)
    starts = ins[::cfg["beats_in"]]
    gaps = [y - x for x, y in zip(starts, starts[1:])]
    ii = max(gaps[-3:]) if gaps else None
    exact_k, bad_k = _compare(cfg, outs, expected, idx)
    res = {"latency_reported": cfg["latency_reported"], "latency_measured": latency,
           "ii_reported": cfg["ii_reported"], "ii_measured": ii, "frame_starts": [s - starts[0] for s in starts],
           "frame_starts_model": cfg["frame_starts_model"], "exact_frames": exact1 + exact_k,
           "frames": 1 + k, "mismatches": bad1 + bad_k, "axi_violations": b.axi_violations[:10]}
    (d / "timing.json").write_text(json.dumps(res, indent=1))
    assert exact1 + exact_k == 1 + k, f"wrong outputs: {(bad1 + bad_k)[:2]}"
    assert latency == cfg["latency_reported"], f"latency {latency} cycles; rtl.json says {cfg['latency_reported']}"
    assert ii == cfg["ii_reported"], f"initiation interval {ii} cycles; rtl.json says {cfg['ii_reported']}"
    assert not b.axi_violations, b.axi_violations[:3]


@cocotb.test()
async def random_stalls(dut: Any) -> None:
    """Every row as one frame, with random tvalid gaps and random tready back-pressure; every bit compared."""
    d, cfg = _setup()
    frames = _words(d / "frames.hex")
    exp_file = d / "expected.hex"
    expected = _words(exp_file) if exp_file.is_file() else None
    n = cfg["rows"]
    b = Bench(dut, cfg, cfg["seed"] + 1)
    await b.start()
    idx = list(range(n))
    _, outs, _ = await b.run(_frame_beats(frames, cfg, idx), n, gap_p=cfg["gap_p"], stall_p=cfg["stall_p"])
    (d / "outputs.hex").write_text("\n".join(f"{w:x}" if w >= 0 else "x" for w, _ in outs) + "\n")
    res: dict[str, Any] = {"rows": n, "beats_out": len(outs), "gap_p": cfg["gap_p"], "stall_p": cfg["stall_p"],
                           "cycles": b.cycle, "axi_violations": b.axi_violations[:10]}
    if expected is not None:
        exact, bad = _compare(cfg, outs, expected, idx)
        res.update(exact_rows=exact, mismatches=bad)
    (d / "random_stalls.json").write_text(json.dumps(res, indent=1))
    assert not b.axi_violations, b.axi_violations[:3]
    if expected is not None:
        assert res["exact_rows"] == n, f"{n - res['exact_rows']} of {n} frames differ; first {res['mismatches'][:1]}"


@cocotb.test()
async def mid_frame_reset(dut: Any) -> None:
    """A frame held inside the core (output not taken) and half of the next one, then a reset: afterwards
    only the new frames come out, exact, with no stale beat."""
    d, cfg = _setup()
    frames, expected = _words(d / "frames.hex"), _words(d / "expected.hex")
    n, nb = cfg["rows"], cfg["beats_in"]
    b = Bench(dut, cfg, cfg["seed"] + 2)
    await b.start()
    fa, fb, fc, fd = (0 % n, 1 % n, 2 % n, 3 % n)
    ins, _, _ = await b.run(_frame_beats(frames, cfg, [fa, fb]), 0, ready=False, stop_after_in=nb + max(1, nb // 2),
                            max_cycles=8 * nb + 200)
    during = await b.reset(3)
    quiet = all(v == 0 for v, _ in during) and all(r == 0 for _, r in during)
    err_after = _val(dut.tlast_err)
    _, outs, _ = await b.run(_frame_beats(frames, cfg, [fc, fd]), 2, gap_p=cfg["gap_p"], stall_p=cfg["stall_p"])
    exact, bad = _compare(cfg, outs, expected, [fc, fd])
    res = {"beats_in_before_reset": len(ins), "frame_beats": nb, "quiet_during_reset": quiet,
           "tlast_err_after_reset": err_after, "beats_out_after": len(outs),
           "expected_beats_after": 2 * cfg["beats_out"], "exact_frames_after": exact, "mismatches": bad,
           "axi_violations": b.axi_violations[:10]}
    (d / "mid_frame_reset.json").write_text(json.dumps(res, indent=1))
    assert len(ins) > nb, "the reset did not come in the middle of the second frame"
    assert quiet, f"m_axis_tvalid or s_axis_tready high during reset: {during}"
    assert err_after == 0, "tlast_err not cleared by reset"
    assert len(outs) == 2 * cfg["beats_out"] and exact == 2, f"after reset: {bad[:1]}, {len(outs)} beats"
    assert not b.axi_violations, b.axi_violations[:3]


@cocotb.test()
async def tlast_errors(dut: Any) -> None:
    """A frame cut short by tlast is completed with zeros; a frame with extra beats has them dropped; both set
    tlast_err; the frames around them stay exact."""
    d, cfg = _setup()
    if cfg.get("tlast", "required") != "required":  # rtl.tlast: ignore frames by the count: see tlast_ignored
        (d / "tlast_errors.json").write_text(json.dumps({"skipped": True, "tlast": cfg["tlast"]}))
        return
    frames, expected = _words(d / "frames.hex"), _words(d / "expected.hex")
    extra = json.loads((d / "extra.json").read_text())
    n, nb, nbo = cfg["rows"], cfg["beats_in"], cfg["beats_out"]
    b = Bench(dut, cfg, cfg["seed"] + 3)
    await b.start()
    beats: list[tuple[int, int]] = []
    want: list[int] = []
    short = extra.get("short")
    if short is not None:  # frames of one beat cannot end early
        beats += [(w, int(k == len(short["beats"]) - 1)) for k, w in enumerate(short["beats"])]
        want += short["expected"]
    f1, f2 = 1 % n, 2 % n
    beats += _frame_beats(frames, cfg, [f1])
    want += expected[f1 * nbo:(f1 + 1) * nbo]
    long_beats = [frames[f2 * nb + k] for k in range(nb)] + extra["long_tail"]
    beats += [(w, int(k == len(long_beats) - 1)) for k, w in enumerate(long_beats)]
    want += expected[f2 * nbo:(f2 + 1) * nbo]
    beats += _frame_beats(frames, cfg, [f1])
    want += expected[f1 * nbo:(f1 + 1) * nbo]
    n_frames = len(want) // nbo
    _, outs, _ = await b.run(beats, n_frames, gap_p=cfg["gap_p"], stall_p=cfg["stall_p"])
    err = _val(dut.tlast_err)
    got = [w for w, _ in outs]
    lasts = [t for _, t in outs]
    ok = got == want and lasts == ([0] * (nbo - 1) + [1]) * n_frames
    res = {"frames": n_frames, "short_frame": short is not None, "exact": ok, "tlast_err": err,
           "got": [hex(w) for w in got][:40], "expected": [hex(w) for w in want][:40],
           "axi_violations": b.axi_violations[:10]}
    (d / "tlast_errors.json").write_text(json.dumps(res, indent=1))
    assert ok, "outputs around the malformed frames differ"
    assert err == 1, "tlast_err not set by a malformed frame"
    assert not b.axi_violations, b.axi_violations[:3]


@cocotb.test()
async def tlast_ignored(dut: Any) -> None:
    """Every row as one frame with s_axis_tlast tied low, then every row again with it tied high, under random
    gaps and back-pressure: a core that ignores tlast (rtl.tlast: ignore) frames by the beat count, so every
    frame is exact and m_axis_tlast sits on each output frame's last beat; tlast_err flags the disagreement
    (except tied high with one-beat frames, where tlast is always right)."""
    d, cfg = _setup()
    if not cfg.get("tied_tlast"):
        (d / "tlast_ignored.json").write_text(json.dumps({"skipped": True, "tlast": cfg.get("tlast", "required")}))
        return
    frames, expected = _words(d / "frames.hex"), _words(d / "expected.hex")
    n, nb, nbo = cfg["rows"], cfg["beats_in"], cfg["beats_out"]
    b = Bench(dut, cfg, cfg["seed"] + 4)
    await b.start()
    res: dict[str, Any] = {"tlast": cfg.get("tlast", "required"), "frames_per_level": n}
    ok = True
    for level, key in ((0, "tied_low"), (1, "tied_high")):
        idx = list(range(n))
        beats = [(w, level) for w, _ in _frame_beats(frames, cfg, idx)]
        _, outs, _ = await b.run(beats, n, gap_p=cfg["gap_p"], stall_p=cfg["stall_p"])
        exact, bad = _compare(cfg, outs, expected, idx)
        err = _val(dut.tlast_err)
        want_err = 0 if (level and nb == 1) else 1
        r = {"exact_frames": exact, "beats_out": len(outs), "expected_beats": n * nbo, "tlast_err": err,
             "tlast_err_expected": want_err, "mismatches": bad[:3]}
        r["ok"] = exact == n and len(outs) == n * nbo and err == want_err
        ok = ok and r["ok"]
        res[key] = r
        await b.reset(2)
    res["ok"] = ok and not b.axi_violations
    res["axi_violations"] = b.axi_violations[:10]
    (d / "tlast_ignored.json").write_text(json.dumps(res, indent=1))
    assert res["tied_low"]["ok"], f"tlast tied low: {res['tied_low']}"
    assert res["tied_high"]["ok"], f"tlast tied high: {res['tied_high']}"
    assert not b.axi_violations, b.axi_violations[:3]
