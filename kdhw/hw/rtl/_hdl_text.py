"""What every generated Verilog file gets, whichever generator printed it (kdhw or da4ml).

* One ``timescale`` line (``TIMESCALE``) and ```default_nettype none`` at the top, ```default_nettype wire``
  restored at the end (the convention: code compiled after ours may rely on implicit nets); ``finish``.
* Module names that all start with the top's name, so several kdhw cores can be compiled into one design.
  kdhw's own modules are named so when printed; da4ml's helper modules (``shift_adder``, ``mux``,
  ``negative`` ... in da4ml's ``verilog/source``) keep fixed names in da4ml, so they are copied as
  ``<top>_<helper>`` and every instantiation of them is renamed to match (``helper_sources``,
  ``prefix_helpers``).  The file of a module is named after it (Verilator's DECLFILENAME, and the way
  da4ml's Verilator emulator finds modules by ``-I``).
* Verilator ``lint_off`` comments only where da4ml's text is kept as da4ml prints it: the ones da4ml's
  helper sources carry themselves (see ``_HELPER_NOTE``), and ``UNUSEDSIGNAL`` on the input port of a da4ml
  pipeline stage that does not read every bit it is given (``mark_unread_stage_inputs``).
"""

from __future__ import annotations

import re
from pathlib import Path

TIMESCALE = "`timescale 1 ns / 1 ps"
HELPERS = ("binop", "lookup_table", "multiplier", "mux", "negative", "shift_adder")
# a helper is always instantiated with a parameter list: ``shift_adder #(8, 9, ...) op_3 (...)``; its own
# declaration reads ``module shift_adder #(``
_HELPER_USE = re.compile(r"\b(" + "|".join(HELPERS) + r")(\s*#\s*\()")
_DIRECTIVE = re.compile(r"^[ \t]*`(timescale|default_nettype)\b[^\n]*(\n|$)", re.M)

_HELPER_NOTE = {
    "binop": "da4ml's lint_off UNUSEDSIGNAL: the operands are padded to a common width and only BW_OUT bits "
             "of the result are kept.",
    "lookup_table": "no lint_off.",
    "multiplier": "da4ml's lint_off UNUSEDSIGNAL: only BW_OUT bits of the full product are kept.",
    "mux": "da4ml's lint_off UNUSEDSIGNAL: the inputs are padded to a common width and only BW_OUT bits are "
           "selected.",
    "negative": "da4ml's lint_off UNUSEDSIGNAL on its input and WIDTHTRUNC on its body, and kdhw's "
                "UNUSEDSIGNAL on its body: the negation is computed at the wider of the two widths and cut to "
                "BW_OUT bits, which da4ml sized to hold it.",
    "shift_adder": "da4ml's lint_off UNUSEDSIGNAL: the sum is computed one bit wider than any result da4ml "
                   "asks for and only BW_OUT bits are kept.",
}


def finish(text: str) -> str:
    """``text`` with exactly one timescale and ``default_nettype none`` .. ``default_nettype wire`` around it."""
    body = _DIRECTIVE.sub("", text).strip("\n")
    return f"{TIMESCALE}\n`default_nettype none\n\n{body}\n\n`default_nettype wire\n"


def prefix_helpers(text: str, top: str) -> str:
    """Every da4ml helper instantiated (or declared) in ``text`` renamed to ``<top>_<helper>``."""
    return _HELPER_USE.sub(lambda m: f"{top}_{m.group(1)}{m.group(2)}", text)


def used_helpers(text: str) -> list[str]:
    """The da4ml helpers ``text`` instantiates (names as da4ml prints them), sorted."""
    return sorted({m.group(1) for m in _HELPER_USE.finditer(text)})


def helper_dir() -> Path:
    from da4ml.codegen import rtl as _rtl

    return Path(_rtl.__file__).parent / "verilog" / "source"


def helper_sources(top: str, names: list[str]) -> dict[str, str]:
    """``{module name: Verilog}`` of da4ml's helpers ``names``, renamed for ``top`` and finished."""
    out = {}
    for name in names:
        text = (helper_dir() / f"{name}.v").read_text()
        if name == "negative":
            # da4ml 0.6 closes its port's lint_off with a second lint_off; and when BW_OUT < BW_IN the
            # negation's top bits (out_ext) are cut off by design, which its WIDTHTRUNC waiver does not cover
            text = text.replace("in,\n    // verilator lint_off UNUSEDSIGNAL",
                                "in,\n    // verilator lint_on UNUSEDSIGNAL")
            text = text.replace("/* verilator lint_off WIDTHTRUNC */",
                                "/* verilator lint_off WIDTHTRUNC */\n  /* verilator lint_off UNUSEDSIGNAL */  // kdhw")
            text = text.replace("/* verilator lint_on WIDTHTRUNC */",
                                "/* verilator lint_on UNUSEDSIGNAL */  // kdhw\n  /* verilator lint_on WIDTHTRUNC */")
        waivers = _HELPER_NOTE.get(name, "as da4ml wrote them.")
        note = (f"// da4ml's '{name}' helper ({helper_dir().name}/{name}.v), renamed {top}_{name} by kdhw so that "
                f"cores with other tops can share a design.\n// Lint waivers: {waivers}\n")
        out[f"{top}_{name}"] = finish(note + prefix_helpers(text, top))
    return out


def unread_input_bits(sol: object) -> list[tuple[int, int]]:
    """(msb, lsb) ranges of a da4ml stage's ``model_inp`` that none of its operations reads."""
    from da4ml.types import minimal_kif

    widths = [sum(minimal_kif(q)) for q in sol.inp_qint]  # type: ignore[attr-defined]
    read = [False] * len(widths)
    refs = sol.ref_count  # type: ignore[attr-defined]
    for i, op in enumerate(sol.ops):  # type: ignore[attr-defined]
        if op.opcode == -1 and refs[i]:
            read[op.id0] = True
    out: list[tuple[int, int]] = []
    lo = 0
    for w, r in zip(widths, read):
        if w > 0 and not r:
            if out and out[-1][0] == lo - 1:  # adjacent to the previous unread range
                out[-1] = (lo + w - 1, out[-1][1])
            else:
                out.append((lo + w - 1, lo))
        lo += max(w, 0)
    return out


def mark_unread_stage_inputs(text: str, sol: object) -> str:
    """A da4ml stage module whose ``model_inp`` has bits no operation reads (da4ml keeps the slot of an input
    whose every use was optimised away) gets ``lint_off UNUSEDSIGNAL`` on that port, with the bits named."""
    unread = unread_input_bits(sol)
    if not unread:
        return text
    bits = ", ".join(f"[{h}:{l}]" if h != l else f"[{l}]" for h, l in unread)
    port = re.compile(r"^([ \t]*)(input\s*\[\d+:\d+\]\s*model_inp\s*,)[ \t]*$", re.M)
    m = port.search(text)
    if m is None:
        raise RuntimeError("internal error: no model_inp port in a da4ml stage module")
    ind = m.group(1)
    repl = (f"{ind}// kdhw: da4ml keeps input slots this stage reads no bit of ({bits}): not a fault\n"
            f"{ind}// verilator lint_off UNUSEDSIGNAL\n{ind}{m.group(2)}\n{ind}// verilator lint_on UNUSEDSIGNAL")
    return text[:m.start()] + repl + text[m.end():]
