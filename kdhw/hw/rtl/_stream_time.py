"""Stream mode, step 3: a cycle model of the generated control logic, for the figures ``rtl.json`` reports.

The control of every unit (counters, credits, FIFOs, valid bits) does not depend on the data, so its
behaviour at full throughput is fixed by the plan.  This model transcribes the Verilog of
``_stream_hdl`` state by state and runs it clock by clock: the latency (first input beat accepted to last
output beat, one frame into an idle core) and the initiation interval (cycles between frame starts when
frames arrive back to back and the output is always ready) come from it, and the cocotb bench measures
both on the Verilog and must find the same numbers.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ._stream_hdl import window_fifo_depth
from ._stream_plan import StreamPlan, Unit


class _Window:
    def __init__(self, u: Unit) -> None:
        s = u.spec
        self.n_in, self.n_tot = s["H"] * s["W"], s["n_total"]
        self.need = s["need"]
        self.G = len(self.need)
        self.P = s["P"]
        self.nval = [s["cols"][g % s["Gx"]]["nval"] for g in range(self.G)]
        self.gather = bool(s.get("gather"))  # taps straight into the FIFO, no pipeline
        self.L = 0 if self.gather else u.dp.stages
        self.D = window_fifo_depth(u)
        self.reset()

    def reset(self) -> None:
        self.n_acc, self.g, self.gdone, self.occ, self.ls = 0, 0, False, 0, 0
        self.vp = [0] * (self.L + 1)
        self.tags = [0] * (self.L + 1)
        self.fifo: deque[int] = deque()

    def _emit(self) -> bool:
        return not self.gdone and self.n_acc == self.need[self.g] and self.occ < self.D

    def _fin(self) -> bool:
        gdone_n = self.gdone or (self._emit() and self.g == self.G - 1)
        return gdone_n and self.n_acc == self.n_tot

    def _take_ok(self) -> bool:
        last = self.g == self.G - 1
        adv = last or self.need[self.g + 1] != self.need[self.g]
        return self._fin() or (self.n_acc != self.n_tot and (
            self.gdone or self.n_acc != self.need[self.g] or (self._emit() and adv)))

    def _virt(self) -> bool:
        return not self._fin() and self.n_acc >= self.n_in

    def in_ready(self) -> bool:
        return self._take_ok() and not self._virt()

    def out_valid(self) -> bool:
        return bool(self.fifo)

    def step(self, in_valid: bool, out_ready: bool) -> None:
        emit, take_ok, fin, virt = self._emit(), self._take_ok(), self._fin(), self._virt()
        take = take_ok and (virt or in_valid)
        fire = bool(self.fifo) and out_ready
        pop = fire and (self.P == 1 or self.ls == self.fifo[0] - 1)
        if self.P > 1 and fire:
            self.ls = 0 if pop else self.ls + 1
        push, tag = (int(emit), self.nval[self.g]) if self.gather else (self.vp[-1], self.tags[-1])
        self.vp = [int(emit)] + self.vp[:-1]
        self.tags = [self.nval[self.g]] + self.tags[:-1]
        if pop:
            self.fifo.popleft()
        if push:
            self.fifo.append(tag)
        self.occ += int(emit) - int(pop)
        gdone_n = self.gdone or (emit and self.g == self.G - 1)
        n_acc_n = self.n_acc + int(take)
        if fin or (gdone_n and n_acc_n == self.n_tot):
            self.n_acc, self.g, self.gdone = (int(take) if fin else 0), 0, False
        else:
            self.n_acc = n_acc_n
            if emit:
                if self.g == self.G - 1:
                    self.gdone = True
                else:
                    self.g += 1


class _Mac:
    def __init__(self, u: Unit) -> None:
        s = u.spec
        self.S, self.Q = s["NB"] * s["Q"], s["Q"]
        self.L = u.dp.stages
        self.D = self.L + 3
        self.reset()

    def reset(self) -> None:
        self.busy, self.st, self.q, self.done, self.occ = False, 0, 0, False, 0
        self.vp = [0] * (self.L + 1)
        self.fifo = 0

    def _emit(self) -> bool:
        return self.done and self.occ < self.D

    def _proc(self) -> bool:
        return self.busy and not (self.done and not self._emit())

    def in_ready(self) -> bool:
        return not self.busy or (self._proc() and self.q == self.Q - 1)

    def out_valid(self) -> bool:
        return self.fifo > 0

    def step(self, in_valid: bool, out_ready: bool) -> None:
        emit, proc = self._emit(), self._proc()
        take = in_valid and self.in_ready()
        pop = self.fifo > 0 and out_ready
        push = self.vp[-1]
        self.vp = [int(emit)] + self.vp[:-1]
        self.fifo += int(push) - int(pop)
        self.occ += int(emit) - int(pop)
        last_q, last_st = self.q == self.Q - 1, self.st == self.S - 1
        if take:
            self.busy = True
        elif proc and last_q:
            self.busy = False
        if proc:
            self.st = 0 if last_st else self.st + 1
            self.q = 0 if last_q else self.q + 1
        if proc and last_st:
            self.done = True
        elif emit:
            self.done = False


class _FMac:
    """``fmac_unit``: issue, registered memory read and operands, registered products, accumulate."""

    def __init__(self, u: Unit) -> None:
        s = u.spec
        self.S, self.K, self.G = s["steps"], s["K"], s["G"]
        self.serial = s.get("requant") == "serial"
        self.amem = self.serial and self.G >= 2  # accumulators in a memory: read-out one cycle later
        self.hold = bool(s.get("hold"))  # the beat stays upstream until taken: ready follows valid
        self.L = u.dp.stages
        self.reset()

    def reset(self) -> None:
        self.busy, self.st, self.k, self.lock, self.done, self.occ = False, 0, 0, False, False, 0
        self.v1 = self.l1 = self.v2 = self.l2 = False
        self.vp = [0] * self.L
        self.vr = [0] * (self.L + 1)  # serial requantization: valid / last group beside the datapath
        self.lr = [0] * (self.L + 1)
        self.rd, self.rg = False, 0
        self.rd1, self.rg1 = False, 0
        self.fifo = 0  # the datapath's output register holds a result (ob_v)

    def _emit(self) -> bool:
        return self.done and not self.occ and not self.rd

    def _iss(self) -> bool:
        if self.serial:
            return self.busy and not self.lock
        return self.busy and (not self.lock or self._emit())

    def in_ready(self, in_valid: bool = False) -> bool:
        if self.hold:  # busy is the upstream valid: ready follows it (within the core, never to the pins)
            self.busy = in_valid
            return self._iss() and self.k == self.K - 1
        return not self.busy or (self._iss() and self.k == self.K - 1)

    def out_valid(self) -> bool:
        return self.fifo > 0

    def step(self, in_valid: bool, out_ready: bool) -> None:
        take = in_valid and self.in_ready(in_valid)
        emit, iss = self._emit(), self._iss()
        pop = self.fifo > 0 and out_ready
        last_rg = self.rg == self.G - 1
        if self.serial:
            push = self.lr[-1]
            if self.amem:
                fv, fl = self.rd1, self.rd1 and self.rg1 == self.G - 1
                self.rd1, self.rg1 = self.rd, self.rg
            else:
                fv, fl = self.rd, self.rd and last_rg
            self.vr = [int(fv)] + self.vr[:-1]
            self.lr = [int(fl)] + self.lr[:-1]
            unlock = self.rd and last_rg
            if self.rd:
                self.rg = 0 if last_rg else self.rg + 1
            if emit:
                self.rd = True
            elif last_rg:
                self.rd = False
        else:
            push = self.vp[-1]
            self.vp = [int(emit)] + self.vp[:-1]
            unlock = emit
        self.fifo = 1 if push else (0 if pop else self.fifo)
        self.occ = int(not pop) if self.occ else int(emit)
        last_k, last_st = self.k == self.K - 1, self.st == self.S - 1
        acc_last = self.v2 and self.l2
        self.v2, self.l2 = self.v1, self.l1
        self.v1, self.l1 = iss, last_st
        if take:
            self.busy = True
        elif iss and last_k:
            self.busy = False
        if iss:
            self.st = 0 if last_st else self.st + 1
            self.k = 0 if last_k else self.k + 1
        if iss and last_st:
            self.lock = True
        elif unlock:
            self.lock = False
        if acc_last:
            self.done = True
        elif emit:
            self.done = False


class _Collect:
    def __init__(self, u: Unit) -> None:
        self.NB = u.spec["NB"]
        self.L = u.dp.stages
        self.D = self.L + 3
        self.reset()

    def reset(self) -> None:
        self.b, self.full, self.occ, self.fifo = 0, False, 0, 0
        self.vp = [0] * (self.L + 1)

    def _emit(self) -> bool:
        return self.full and self.occ < self.D

    def in_ready(self) -> bool:
        return not self.full or self._emit()

    def out_valid(self) -> bool:
        return self.fifo > 0

    def step(self, in_valid: bool, out_ready: bool) -> None:
        emit = self._emit()
        take = in_valid and self.in_ready()
        pop = self.fifo > 0 and out_ready
        push = self.vp[-1]
        self.vp = [int(emit)] + self.vp[:-1]
        self.fifo += int(push) - int(pop)
        self.occ += int(emit) - int(pop)
        last_b = self.b == self.NB - 1
        if take:
            self.b = 0 if last_b else self.b + 1
            if last_b:
                self.full = True
            elif emit:
                self.full = False
        elif emit:
            self.full = False


class _Out:
    def __init__(self, beats: int, hold: bool = False) -> None:
        self.nbo = beats
        self.hold = hold  # after an fmac: the result stays there until the frame's last beat is sent
        self.reset()

    def reset(self) -> None:
        self.busy, self.beat = False, 0

    def in_ready(self, m_ready: bool) -> bool:
        if self.hold:
            return m_ready and self.beat == self.nbo - 1
        return not self.busy or (m_ready and self.beat == self.nbo - 1)

    def step(self, in_valid: bool, m_ready: bool) -> tuple[bool, bool]:
        """Returns (an output beat moved, it was the frame's last); ``in_valid`` is the beat offered (hold) or
        moved (otherwise)."""
        if self.hold:
            fire = in_valid and m_ready
            last = self.beat == self.nbo - 1
            if fire:
                self.beat = 0 if last else self.beat + 1
            return fire, fire and last
        take = in_valid and self.in_ready(m_ready)
        fire = self.busy and m_ready
        last = self.beat == self.nbo - 1
        if take:
            self.busy, self.beat = True, 0
        elif fire:
            if last:
                self.busy = False
            self.beat = 0 if last else self.beat + 1
        return fire, fire and last


def _model(u: Unit) -> Any:
    return {"window": _Window, "mac": _Mac, "collect": _Collect, "fmac": _FMac}[u.kind](u)


def _run(units: list[Any], out: _Out | None, beats_in: int, frames: int, limit: int,
         beats_out: int = 1) -> tuple[list[int], list[int]]:
    """Feed ``frames`` frames as fast as the core takes them, output always ready; cycle of every frame's
    first accepted input beat and of its last output beat (or last beat out of the last unit, without
    ``out``)."""
    starts, ends = [], []
    sent = 0
    done_out = 0
    for t in range(limit):
        src_valid = sent < frames * beats_in
        valids = [u.out_valid() for u in units]
        # a unit that reads its input beat where the unit before holds it is ready only while that beat is valid
        readies = [u.in_ready(iv) if getattr(u, "hold", False) else u.in_ready()
                   for u, iv in zip(units, [src_valid] + valids[:-1])]
        out_ready = out.in_ready(True) if out is not None else True
        # the input unit passes beats straight through (tready = the first unit's ready)
        if src_valid and readies[0]:
            if sent % beats_in == 0:
                starts.append(t)
            sent += 1
        nxt = readies[1:] + [out_ready]
        prev = [src_valid] + valids[:-1]
        last_fire = valids[-1] and out_ready
        for u, iv, orr in zip(units, prev, nxt):
            u.step(iv, orr)
        if out is not None:
            _, last = out.step(valids[-1] if out.hold else last_fire, True)
            if last:
                ends.append(t)
                done_out += 1
        elif last_fire:
            done_beats = len(ends) + 1
            ends.append(t)
            if done_beats % beats_out == 0:
                done_out += 1
        if done_out == frames:
            return starts, ends
    raise RuntimeError(f"internal error: the cycle model did not finish {frames} frame(s) in {limit} cycles")


def stream_timing(plan: StreamPlan, beats_out: int) -> dict[str, Any]:
    """Latency, initiation interval and each unit's own cycles per frame at full throughput."""
    bound = 64 + sum(u.beats_in * (u.spec.get("Q", 1) + 2) + u.spec.get("steps", 0) * u.spec.get("windows", 1) + 4 * (u.dp.stages + 4)
                     for u in plan.units)

    def fresh() -> tuple[list[Any], _Out]:
        return [_model(u) for u in plan.units], _Out(beats_out, plan.units[-1].kind == "fmac")

    units, out = fresh()
    s1, e1 = _run(units, out, plan.beats_in, 1, 4 * bound)
    latency = e1[0] - s1[0]
    frames = 6
    while True:
        units, out = fresh()
        starts, _ = _run(units, out, plan.beats_in, frames, 4 * bound * frames)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        if len(set(gaps[-3:])) == 1 or frames >= 48:
            break
        frames *= 2
    ii = max(gaps[-3:])
    per_unit = []
    for u in plan.units:
        m = _model(u)
        s, _ = _run([m], None, u.beats_in, 6, 4 * bound * 6, beats_out=u.beats_out)
        per_unit.append(max(b - a for a, b in zip(s[-3:-1], s[-2:])))
    bottleneck = max(range(len(per_unit)), key=lambda i: per_unit[i])
    return {"latency_cycles": latency, "initiation_interval": ii, "frame_starts": starts, "frames_simulated": frames,
            "unit_cycles_per_frame": per_unit, "bottleneck": plan.units[bottleneck].name,
            "input_beats_per_frame": plan.beats_in}
