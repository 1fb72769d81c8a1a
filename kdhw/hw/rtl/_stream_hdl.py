"""Stream mode, step 2: Verilog-2005 for the units of a stream plan and the AXI4-Stream top around them.

Every unit has the same internal handshake (``in_valid``/``in_ready``/``in_data``, ``out_valid``/
``out_ready``/``out_data``; a beat moves when valid and ready are both high) and the same way of taking
back-pressure around a da4ml pipeline, which has no clock enable: a unit only issues work into its
pipeline while it holds a *credit*, i.e. while the pipeline's contents plus the unit's output FIFO
(``stages + 3`` entries) leave room for one more result.  A valid bit travels beside the data through
the pipeline; line buffers, counters and accumulators advance only on accepted beats.  ``in_ready`` of
every unit is a function of registered state, so no combinational path runs from an output port back to
an input port.

The names of all generated modules start with the top's name (da4ml's helper modules are renamed to match,
``_hdl_text``), so several kdhw cores can live in one design; the text is ``verilator --lint-only -Wall``
clean: widths match at every operator, and bits that are deliberately not read (tdata past the beat's
elements, accumulators of outputs whose weights are all 0) go to ``unused_*`` wires, Verilator's convention.
Each function returns the Verilog text of one module (``datapath_modules``: ``{module name: text}``).
"""

from __future__ import annotations

from typing import Any

from ._stream_plan import Datapath, Kif, StreamPlan, Unit, fmac_operand_bits, kif_width


def _bits(n: int) -> int:
    """Width of a counter that holds 0..n."""
    return max(1, int(n).bit_length())


def _lane_offsets(kifs: list[Kif]) -> list[int]:
    offs, o = [], 0
    for k in kifs:
        offs.append(o)
        o += kif_width(k)
    return offs


def _bus_width(kifs: list[Kif]) -> int:
    return sum(kif_width(k) for k in kifs)


def _vec(w: int) -> str:
    return f"[{w - 1}:0] " if w > 1 else ("" if w == 1 else "[0:0] ")


def _slice(sig: str, lo: int, w: int) -> str:
    return f"{sig}[{lo + w - 1}:{lo}]" if w > 1 else f"{sig}[{lo}]"


def convert_expr(sig: str, lo: int, frm: Kif, to: Kif) -> str:
    """Verilog expression turning the ``frm``-format value at ``sig[lo +: width]`` into the ``to`` format
    (same value, wider code)."""
    wf, wt = kif_width(frm), kif_width(to)
    if wt == 0:
        return ""
    if wf == 0:
        return f"{wt}'d0"
    shift = int(to[2]) - int(frm[2])
    hi = wt - wf - shift
    if shift < 0 or hi < 0 or (frm[0] and not to[0]):
        raise RuntimeError(f"internal error: format {frm} does not fit {to}")
    parts = []
    if hi > 0:
        parts.append(f"{{{hi}{{{sig}[{lo + wf - 1}]}}}}" if frm[0] else f"{hi}'d0")
    parts.append(_slice(sig, lo, wf))
    if shift > 0:
        parts.append(f"{shift}'d0")
    return "{" + ", ".join(parts) + "}" if len(parts) > 1 else parts[0]


def _concat(parts: list[str]) -> str:
    """LSB-first list -> Verilog concatenation (MSB first)."""
    parts = [p for p in parts if p]
    if not parts:
        return "1'b0"
    return "{" + ", ".join(reversed(parts)) + "}" if len(parts) > 1 else parts[0]


def fifo_module(top: str) -> tuple[str, str]:
    name = f"{top}_fifo"
    return name, f"""// Output FIFO of a unit: show-ahead (dout is the oldest entry while valid).  Never full in use:
// a unit issues work into its pipeline only while pipeline + FIFO have room for the result (credit).
module {name} #(parameter W = 8, parameter D = 4, parameter AW = 2) (
    input clk,
    input rst,
    input push,
    input [W-1:0] din,
    input pop,
    output valid,
    output [W-1:0] dout
);
    localparam [AW-1:0] LAST = D[AW-1:0] - 1'b1;  // the last address (D - 1 < 2^AW), at the pointers' width
    reg [W-1:0] mem [0:D-1];
    reg [AW-1:0] wp, rp;
    reg [AW:0] cnt;
    wire do_pop = pop & valid;
    assign valid = cnt != 0;
    assign dout = mem[rp];
    always @(posedge clk) begin
        if (push) mem[wp] <= din;
        if (rst) begin
            wp <= 0;
            rp <= 0;
            cnt <= 0;
        end else begin
            if (push) wp <= (wp == LAST) ? {{AW{{1'b0}}}} : wp + 1'b1;
            if (do_pop) rp <= (rp == LAST) ? {{AW{{1'b0}}}} : rp + 1'b1;
            cnt <= cnt + push - do_pop;
        end
    end
endmodule
"""


def _dp_wires(u: Unit, dp_name: str, in_parts: list[str]) -> list[str]:
    dp = u.dp
    w_in = sum(dp.in_widths)
    w_out = sum(kif_width(k) for k in dp.out_kifs)
    return [
        f"    wire [{w_in - 1}:0] dp_in = {_concat(in_parts)};",
        f"    wire [{w_out - 1}:0] dp_out;",
        f"    {dp_name} dp (.clk(clk), .model_inp(dp_in), .model_out(dp_out));",
    ]


def _credit(depth: int, stages: int, emit: str, pop: str) -> tuple[list[str], list[str], str]:
    """Declarations, reset/update statements and the credit condition shared by all units."""
    ow = _bits(depth)
    decl = [f"    reg [{ow - 1}:0] occ;  // results issued into the pipeline and not yet taken from the FIFO",
            f"    reg [{stages}:0] vp;  // valid bit beside the pipeline data"]
    upd = [f"            occ <= occ + {emit} - {pop};",
           f"            vp <= {{vp[{stages - 1}:0], {emit}}};" if stages >= 1 else f"            vp <= {emit};"]
    return decl, upd, f"(occ < {depth})"


def _handshake_ports(name: str, wi: int, wo: int) -> list[str]:
    """The header every internal unit shares: a valid/ready input and a valid/ready output."""
    return [f"module {name} (", "    input clk,", "    input rst,", "    input in_valid,", "    output in_ready,",
            f"    input [{wi - 1}:0] in_data,", "    output out_valid,", "    input out_ready,",
            f"    output [{wo - 1}:0] out_data", ");"]


def window_unit(top: str, u: Unit) -> str:
    s = u.spec
    dp: Datapath = u.dp
    name = f"{top}_{u.name}"
    in_k, out_k = u.in_lanes, u.out_lanes
    wi, wo = _bus_width(in_k), _bus_width(out_k)
    in_off = _lane_offsets(in_k)
    P, F, Gx, Ho, W = s["P"], s["F"], s["Gx"], s["Ho"], s["W"]
    n_in, n_tot, B = s["H"] * s["W"], s["n_total"], s["depth"]
    gather = bool(s.get("gather"))  # the taps themselves, straight into the FIFO: no datapath, no pipeline
    L = 0 if gather else dp.stages
    D = window_fifo_depth(u)
    nw = _bits(n_tot)
    gyw, gxw = _bits(max(Ho - 1, 1)), _bits(max(Gx - 1, 1))
    taps = s["taps"]
    # classes: rows differ only in which kernel rows are inside the image; columns in their tap offsets
    row_keys = [tuple(r["mask"]) for r in s["rows"]]
    col_keys = [(tuple(tuple(o) for o in c["off"]), c["nval"]) for c in s["cols"]]
    rcls = sorted(set(row_keys), key=row_keys.index)
    ccls = sorted(set(col_keys), key=col_keys.index)
    rcw, ccw = _bits(max(len(rcls) - 1, 1)), _bits(max(len(ccls) - 1, 1))
    nvw = _bits(P)
    pad_word = _concat([f"{kif_width(k)}'d{c & ((1 << kif_width(k)) - 1)}" if kif_width(k) else ""
                        for c, k in zip(s["pad_codes"], in_k)])
    L_ = []
    a = L_.append
    a(f"// {u.name}: {s['op']} {', '.join(u.nodes)}: {s['C']} x {s['H']}x{s['W']} -> {F} x {Ho}x{s['Wo']}, "
      f"{P} output position(s) per issue")
    a(f"// Line buffer: lb_k is the input position taken k beats ago ({B} positions of {wi} bits).  Group (gy, gx)")
    a("// is issued when the input count equals its need (the raster index of its last tap + 1); its taps then")
    a("// sit at fixed offsets per (row class, column class); taps outside the image read the pad value.")
    if n_tot > n_in:
        a(f"// Rows below the image are fed as {n_tot - n_in} virtual zero beat(s) after the {n_in} real ones.")
    L_ += _handshake_ports(name, wi, wo)
    lbram = s.get("line_buffer") == "bram"
    if not lbram:
        a(f"    reg [{B * wi - 1}:0] sr;")
    lb_at = len(L_)  # the lb_k wires go here once the taps have said which positions they read
    a(f"    reg [{nw - 1}:0] n_acc;  // beats taken this frame (real and virtual)")
    a(f"    reg [{gyw - 1}:0] gy;")
    a(f"    reg [{gxw - 1}:0] gx;")
    a("    reg gdone;  // every group of this frame issued")
    a(f"    reg [{nw - 1}:0] ryw;  // (last tap row of row gy) * W")
    a(f"    reg [{nw - 1}:0] need;  // beats the current group needs")
    # tables: an explicit entry only where a group differs from the interior (borders)
    cxs = [c["cx"] for c in s["cols"]]
    step_x = s["stride"][1] * P
    L_.extend(_table("f_cx", "last tap column of column group g", nw, gxw, cxs,
                     f"g * {nw}'d{step_x} + {nw}'d{cxs[0]}", [cxs[0] + g * step_x for g in range(Gx)]))
    cc_of = [ccls.index(k) for k in col_keys]
    L_.extend(_table("f_cc", "column class of column group g", ccw, gxw, cc_of, None, None))
    rc_of = [rcls.index(k) for k in row_keys]
    L_.extend(_table("f_rc", "row class of row g", rcw, gyw, rc_of, None, None))
    a(f"    wire [{rcw - 1}:0] rc = f_rc(gy);")
    a(f"    wire [{ccw - 1}:0] cc = f_cc(gx);")
    a(f"    wire last_gx = gx == {gxw}'d{Gx - 1};")
    a(f"    wire last_g = last_gx && gy == {gyw}'d{Ho - 1};")
    a(f"    wire [{gxw - 1}:0] gx_n = last_gx ? {gxw}'d0 : gx + 1'b1;")
    a(f"    wire [{gyw - 1}:0] gy_n = last_gx ? gy + 1'b1 : gy;")
    a(f"    wire [{nw - 1}:0] ryw_n = last_gx ? ryw + {nw}'d{s['stride'][0] * W} : ryw;")
    a(f"    wire [{nw - 1}:0] need_n = ryw_n + f_cx(gx_n) + 1'b1;")
    pop = "pop"
    cdecl, cupd, credit = _credit(D, L, "emit", pop)
    if gather:  # no pipeline beside which a valid bit travels
        cdecl, cupd = cdecl[:1], cupd[:1]
    L_.extend(cdecl)
    a("    wire pend = !gdone && n_acc == need;")
    a(f"    wire emit = pend && {credit};")
    a("    wire adv = last_g || need_n != need;  // the next group needs more input than this one")
    a("    wire gdone_n = gdone || (emit && last_g);")
    a(f"    wire fin = gdone_n && n_acc == {nw}'d{n_tot};  // the frame closes now: a beat taken now starts the next")
    a(f"    wire take_ok = fin || (n_acc != {nw}'d{n_tot} && (gdone || n_acc != need || (emit && adv)));")
    a(f"    wire virt = !fin && n_acc >= {nw}'d{n_in};  // bottom padding: zero beats made up here")
    a("    assign in_ready = take_ok && !virt;")
    a("    wire take = take_ok && (virt || in_valid);")
    a(f"    wire [{nw - 1}:0] n_acc_n = n_acc + take;")
    a(f"    wire wrap = fin || (gdone_n && n_acc_n == {nw}'d{n_tot});  // frame complete")
    # taps
    combos = [(ri, ci) for ri in range(len(rcls)) for ci in range(len(ccls))]
    tap_names: dict[tuple[int, int], str] = {}
    read_off: set[int] = set()
    for p in range(P):
        for t, (ky, kx) in enumerate(taps):
            tn = f"tap_p{p}_t{t}"
            tap_names[(p, t)] = tn
            a(f"    reg [{wi - 1}:0] {tn};  // lane {p}, kernel tap ({ky}, {kx})")
            a("    always @* begin")
            a("        case ({rc, cc})")
            for ri, ci in combos:
                mask = rcls[ri][ky]
                co = ccls[ci][0][p][kx]
                if mask and co >= 0:
                    off = s["row_off"][ky] * W + co
                    read_off.add(off)
                    a(f"            {{{rcw}'d{ri}, {ccw}'d{ci}}}: {tn} = lb_{off};")
            a(f"            default: {tn} = {pad_word};")
            a("        endcase")
            a("    end")
    # only the positions some tap reads get a name; the others only pass through the shift register
    if lbram:
        L_[lb_at:lb_at] = _bram_line_buffer(W, wi, read_off)
    else:
        L_[lb_at:lb_at] = [f"    wire [{wi - 1}:0] lb_{k} = sr[{(k + 1) * wi - 1}:{k * wi}];" for k in sorted(read_off)]
    lane_words = []
    if gather:  # output lane t*C + c: channel c of tap t, in its input format
        C = s["C"]
        lane_words.append(_concat([_slice(tap_names[(0, j // C)], in_off[j % C], kif_width(in_k[j % C]))
                                   if kif_width(in_k[j % C]) else "" for j in range(F)]))
    else:
        in_parts = []
        for (p, t, c), w in zip(dp.inputs, dp.in_widths):
            if w:
                in_parts.append(_slice(tap_names[(p, t)], in_off[c], w))
        L_.extend(_dp_wires(u, f"{name}_dp", in_parts))
    # datapath outputs -> lane formats of the unit's output
    dp_offs = _lane_offsets(dp.out_kifs)
    for p in range(0 if gather else P):
        parts = []
        for c in range(F):
            j = p * F + c
            parts.append(convert_expr("dp_out", dp_offs[j], dp.out_kifs[j], out_k[c]) if kif_width(out_k[c]) else "")
        lane_words.append(_concat(parts))
    entry_w = P * wo + (nvw if P > 1 else 0)
    if P > 1:
        L_.extend(_table("f_nval", "valid lanes of column group g", nvw, gxw, [c["nval"] for c in s["cols"]],
                         None, None))
        a(f"    reg [{(L + 1) * nvw - 1}:0] tagp;  // valid-lane count beside the pipeline data")
        fifo_in = _concat([_concat(list(lane_words)), f"tagp[{(L + 1) * nvw - 1}:{L * nvw}]"])
    else:
        fifo_in = lane_words[0]
    aw = _bits(D - 1)
    a("    wire f_valid;")
    a(f"    wire [{entry_w - 1}:0] f_dout;")
    a("    wire pop;")
    push = "emit" if gather else f"vp[{L}]"
    a(f"    {top}_fifo #(.W({entry_w}), .D({D}), .AW({aw})) fifo (.clk(clk), .rst(rst), .push({push}), "
      f".din({fifo_in}), .pop(pop), .valid(f_valid), .dout(f_dout));")
    if P > 1:
        lsw = _bits(P - 1)
        a(f"    reg [{lsw - 1}:0] ls;  // lane of the FIFO head being sent")
        a(f"    wire [{nvw - 1}:0] f_nv = f_dout[{entry_w - 1}:{P * wo}];")
        a(f"    wire last_lane = {_zext('ls', lsw, nvw)} == f_nv - 1'b1;")
        a("    assign out_valid = f_valid;")
        a("    assign pop = f_valid && out_ready && last_lane;")
        a(f"    reg [{wo - 1}:0] lane_word;")
        a("    always @* begin")
        a("        case (ls)")
        for p in range(P):
            a(f"            {lsw}'d{p}: lane_word = f_dout[{(p + 1) * wo - 1}:{p * wo}];")
        a(f"            default: lane_word = {wo}'d0;")
        a("        endcase")
        a("    end")
        a("    assign out_data = lane_word;")
    else:
        a("    assign out_valid = f_valid;")
        a("    assign pop = f_valid && out_ready;")
        a("    assign out_data = f_dout;")
    a("    always @(posedge clk) begin")
    shift_in = f"virt ? {wi}'d0 : in_data"
    if lbram:
        L_.extend(_bram_line_buffer_steps(W, wi, read_off, "take", f"({shift_in})"))
    elif B > 1:
        a(f"        if (take) sr <= {{sr[{(B - 1) * wi - 1}:0], {shift_in}}};")
    else:
        a(f"        if (take) sr <= {shift_in};")
    if P > 1:
        a(f"        tagp <= {{tagp[{L * nvw - 1}:0], f_nval(gx)}};" if L >= 1 else "        tagp <= f_nval(gx);")
    a("        if (rst) begin")
    a(f"            n_acc <= {nw}'d0;")
    a(f"            gy <= {gyw}'d0;")
    a(f"            gx <= {gxw}'d0;")
    a("            gdone <= 1'b0;")
    a(f"            ryw <= {nw}'d{s['ry0'] * W};")
    a(f"            need <= {nw}'d{s['need'][0]};")
    a("            occ <= 0;")
    if lbram:
        a("            lb_wp <= 0;")
    if not gather:
        a("            vp <= 0;")
    if P > 1:
        a("            ls <= 0;")
    a("        end else begin")
    L_.extend(cupd)
    if P > 1:
        a("            if (f_valid && out_ready) ls <= last_lane ? 0 : ls + 1'b1;")
    a("            if (wrap) begin")
    a(f"                n_acc <= (fin && take) ? {nw}'d1 : {nw}'d0;")
    a(f"                gy <= {gyw}'d0;")
    a(f"                gx <= {gxw}'d0;")
    a("                gdone <= 1'b0;")
    a(f"                ryw <= {nw}'d{s['ry0'] * W};")
    a(f"                need <= {nw}'d{s['need'][0]};")
    a("            end else begin")
    a("                n_acc <= n_acc_n;")
    a("                if (emit) begin")
    a("                    if (last_g) gdone <= 1'b1;")
    a("                    else begin")
    a("                        gx <= gx_n;")
    a("                        gy <= gy_n;")
    a("                        ryw <= ryw_n;")
    a("                        need <= need_n;")
    a("                    end")
    a("                end")
    a("            end")
    a("        end")
    a("    end")
    a("endmodule")
    return "\n".join(L_) + "\n"


def line_buffer_rows(W: int, read_off: set[int]) -> dict[int, int]:
    """Row r -> the last column c that a tap reads at position r*W + c of a line buffer in rows."""
    rows: dict[int, int] = {}
    for k in read_off:
        r, c = divmod(k, W)
        rows[r] = max(rows.get(r, 0), c)
    return rows


def _bram_line_buffer(W: int, wi: int, read_off: set[int]) -> list[str]:
    """The line buffer as rows: position k = r*W + c (the input taken k beats ago) is entry c of a short shift
    register fed by the input delayed r rows; each row's delay is a W-word memory with a registered read
    (block RAM), all written at one pointer.  The read is issued a beat ahead (the address after the pointer
    when a beat is taken, else the pointer), so at every take ``dq_r`` holds the word written W takes ago."""
    rows = line_buffer_rows(W, read_off)
    rmax = max(rows)
    aw = _bits(W - 1)
    L = [f"    // line buffer in block RAM: {rmax} row delay(s) of {W} x {wi} bits; short shift registers per row",
         f"    reg [{aw - 1}:0] lb_wp;  // write pointer, shared by every row delay",
         f"    wire [{aw - 1}:0] lb_wpn = lb_wp == {aw}'d{W - 1} ? {aw}'d0 : lb_wp + 1'b1;"]
    for r in range(1, rmax + 1):
        L += ["    (* ram_style = \"block\" *)", f"    reg [{wi - 1}:0] lb_m{r} [0:{W - 1}];  // input delayed {r} row(s)",
              f"    reg [{wi - 1}:0] lb_q{r};  // the word written {W} takes ago, read a beat ahead"]
    for r, cmax in sorted(rows.items()):
        L.append(f"    reg [{(cmax + 1) * wi - 1}:0] lb_s{r};  // row {r}: the last {cmax + 1} position(s)")
    for k in sorted(read_off):
        r, c = divmod(k, W)
        L.append(f"    wire [{wi - 1}:0] lb_{k} = lb_s{r}[{(c + 1) * wi - 1}:{c * wi}];")
    return L


def _bram_line_buffer_steps(W: int, wi: int, read_off: set[int], take: str, din: str) -> list[str]:
    """The clocked statements of ``_bram_line_buffer`` (inside the unit's always block, before its reset)."""
    rows = line_buffer_rows(W, read_off)
    rmax = max(rows)
    L = [f"        if ({take}) begin", "            lb_wp <= lb_wpn;"]
    for r in range(1, rmax + 1):
        L.append(f"            lb_m{r}[lb_wp] <= {din if r == 1 else f'lb_q{r - 1}'};")
    for r, cmax in sorted(rows.items()):
        src = din if r == 0 else f"lb_q{r}"
        L.append(f"            lb_s{r} <= {{lb_s{r}[{cmax * wi - 1}:0], {src}}};" if cmax else
                 f"            lb_s{r} <= {src};")
    L.append("        end")
    for r in range(1, rmax + 1):
        L.append(f"        lb_q{r} <= lb_m{r}[{take} ? lb_wpn : lb_wp];")
    return L


def window_fifo_depth(u: Unit) -> int:
    """Output FIFO entries of a window unit: room for every result in its pipeline plus a margin
    (``stages + 3``); a gathering unit's (taps into an ``fmac`` that spends several cycles on each) only
    ``depth_out``, the entries that keep that unit busy."""
    return int(u.spec["depth_out"]) if u.spec.get("gather") else u.dp.stages + 3


def _table(name: str, doc: str, w: int, iw: int, values: list[int], default_expr: str | None,
           default_values: list[int] | None) -> list[str]:
    """A Verilog function of a group index: explicit entries only where the value differs from the default
    (the linear interior formula, or else the most frequent value)."""
    if default_expr is None:
        common = max(set(values), key=values.count)
        default_expr, default_values = f"{w}'d{common}", [common] * len(values)
    lines = [f"    function [{w - 1}:0] {name};  // {doc}", f"        input [{iw - 1}:0] g;", "        case (g)"]
    lines += [f"            {iw}'d{g}: {name} = {w}'d{v};" for g, (v, d) in enumerate(zip(values, default_values))
              if v != d]
    lines += [f"            default: {name} = {default_expr};", "        endcase", "    endfunction"]
    return lines


def _sext(sig: str, lo: int, k: Kif, shift: int, width: int) -> str:
    """The lane code at ``sig[lo +: w]`` of format ``k`` as a ``width``-bit signed code with ``shift`` more
    fraction bits."""
    w = kif_width(k)
    if w == 0:
        return f"{width}'d0"
    hi = width - w - shift
    if hi < 0:
        raise RuntimeError("internal error: MAC operand too narrow")
    parts = []
    if hi > 0:
        parts.append(f"{{{hi}{{{sig}[{lo + w - 1}]}}}}" if k[0] else f"{hi}'d0")
    parts.append(_slice(sig, lo, w))
    if shift > 0:
        parts.append(f"{shift}'d0")
    return "{" + ", ".join(parts) + "}" if len(parts) > 1 else parts[0]


def _zext(sig: str, w: int, to: int) -> str:
    """The unsigned ``w``-bit ``sig`` zero-extended to ``to`` bits."""
    return sig if to == w else f"{{{to - w}'d0, {sig}}}"


def _resize(sig: str, w: int, to: int) -> str:
    """The signed ``w``-bit ``sig`` at ``to`` bits: sign-extended, or its low bits (modular arithmetic)."""
    if to == w:
        return sig
    if to > w:
        return f"{{{{{to - w}{{{sig}[{w - 1}]}}}}, {sig}}}"
    return f"{sig}[{to - 1}:0]" if to > 1 else f"{sig}[0]"


def mac_unit(top: str, u: Unit) -> str:
    s = u.spec
    dp = u.dp
    name = f"{top}_{u.name}"
    in_k = u.in_lanes
    wi = _bus_width(in_k)
    wo = _bus_width(u.out_lanes)
    in_off = _lane_offsets(in_k)
    J, NB, P, Q, O, fx = s["J"], s["NB"], s["P"], s["Q"], s["O"], s["fx"]
    S = NB * Q
    L = dp.stages
    D = L + 3
    live = [kif_width(k) > 0 for k in in_k]
    xw = max([kif_width(k) + fx - int(k[2]) + (0 if k[0] else 1) for k, lv in zip(in_k, live) if lv] + [2])
    wc = s["wcodes"]
    wmax = max([abs(int(v)) for row in wc for v in row] + [1])
    ww = wmax.bit_length() + 1
    acw = s["acc_bits"]
    sw, qw = _bits(max(S - 1, 1)), _bits(max(Q - 1, 1))
    L_ = []
    a = L_.append
    a(f"// {u.name}: dense {', '.join(u.nodes)} folded: {P} MAC lane(s) x {O} outputs over {NB} beat(s) of {J} "
      f"element(s)")
    a(f"// ({S} steps per frame).  Weights come from a constant ROM (codes x 2^-{s['fw']}); inputs are aligned to "
      f"{fx} fraction bits;")
    a("// the exact integer sums are requantized by a da4ml datapath once per frame.")
    L_ += _handshake_ports(name, wi, wo)
    a(f"    reg [{wi - 1}:0] xb;  // the beat being multiplied")
    a("    reg busy;  // xb holds a beat with steps left")
    a(f"    reg [{sw - 1}:0] st;  // step of the frame (ROM address)")
    a(f"    reg [{qw - 1}:0] q;  // chunk of the beat")
    a("    reg done;  // the accumulators hold a complete frame")
    cdecl, cupd, credit = _credit(D, L, "emit", "pop")
    L_.extend(cdecl)
    a(f"    wire emit = done && {credit};")
    a("    wire proc = busy && !(done && !emit);")
    a(f"    wire last_q = q == {qw}'d{Q - 1};")
    a(f"    wire last_st = st == {sw}'d{S - 1};")
    a("    assign in_ready = !busy || (proc && last_q);")
    a("    wire take = in_valid && in_ready;")
    # lane select per chunk
    for p in range(P):
        a(f"    reg signed [{xw - 1}:0] x_{p};")
        a("    always @* begin")
        a("        case (q)")
        for qq in range(Q):
            j = qq * P + p
            if j < J and live[j]:
                a(f"            {qw}'d{qq}: x_{p} = {_sext('xb', in_off[j], in_k[j], fx - int(in_k[j][2]), xw)};")
        a(f"            default: x_{p} = {xw}'d0;")
        a("        endcase")
        a("    end")
    # ROM
    rw = P * O * ww
    a(f"    reg [{rw - 1}:0] rom;  // weights of step st: lane p, output o at [(p*{O}+o)*{ww} +: {ww}]")
    a("    always @* begin")
    a("        case (st)")
    mask = (1 << ww) - 1
    for step in range(S):
        b, qq = divmod(step, Q)
        word = 0
        for p in range(P):
            j = qq * P + p
            e = s["elem_of"][b][j] if j < J else -1
            if e < 0 or not live[j]:
                continue
            for o in range(O):
                word |= (int(wc[e][o]) & mask) << ((p * O + o) * ww)
        a(f"            {sw}'d{step}: rom = {rw}'h{word:x};")
    a(f"            default: rom = {rw}'d0;")
    a("        endcase")
    a("    end")
    mw = xw + ww
    unread = []  # bits nothing reads, for lint (below)
    for o in range(O):
        a(f"    reg signed [{acw[o] - 1}:0] acc_{o};")
        a(f"    wire signed [{acw[o] - 1}:0] base_{o} = (st == {sw}'d0) ? {acw[o]}'d0 : acc_{o};")
        terms = []
        for p in range(P):
            a(f"    wire signed [{ww - 1}:0] w_{p}_{o} = rom[{(p * O + o + 1) * ww - 1}:{(p * O + o) * ww}];")
            a(f"    wire signed [{mw - 1}:0] m_{p}_{o} = x_{p} * w_{p}_{o};")
            terms.append(_resize(f"m_{p}_{o}", mw, acw[o]))
            if acw[o] < mw:  # an accumulator narrower than one product (weights all 0): its top bits go unused
                unread.append(f"m_{p}_{o}[{mw - 1}:{acw[o]}]")
        # the sum is exact modulo 2^acw, and the frame's total fits acw bits (the plan's exact bounds)
        a(f"    wire signed [{acw[o] - 1}:0] sum_{o} = base_{o} + {' + '.join(terms)};")
    in_parts = []
    read = dict.fromkeys(range(O), 0)
    for o, w in zip(dp.inputs, dp.in_widths):
        if w:
            in_parts.append(_slice(f"acc_{o}", 0, w))
            read[o] = w
    L_.extend(_dp_wires(u, f"{name}_dp", in_parts))
    # an output whose weights are all 0 is a constant the datapath folds in; its accumulator (1 bit, constant
    # 0) and the top bit of an accumulator that never goes negative are read by nothing
    unread += [f"acc_{o}" if not w else f"acc_{o}[{acw[o] - 1}:{w}]" for o, w in read.items() if w < acw[o]]
    if unread:
        a(f"    wire unused_acc = ^{{{', '.join(unread)}}};  // for lint: bits the datapath does not read")
    aw = _bits(D - 1)
    a("    wire f_valid;")
    a("    wire pop = f_valid && out_ready;")
    a(f"    {top}_fifo #(.W({wo}), .D({D}), .AW({aw})) fifo (.clk(clk), .rst(rst), .push(vp[{L}]), .din(dp_out), "
      f".pop(pop), .valid(f_valid), .dout(out_data));")
    a("    assign out_valid = f_valid;")
    a("    always @(posedge clk) begin")
    a("        if (take) xb <= in_data;")
    a("        if (proc) begin")
    for o in range(O):
        a(f"            acc_{o} <= sum_{o};")
    a("        end")
    a("        if (rst) begin")
    a("            busy <= 1'b0;")
    a(f"            st <= {sw}'d0;")
    a(f"            q <= {qw}'d0;")
    a("            done <= 1'b0;")
    a("            occ <= 0;")
    a("            vp <= 0;")
    a("        end else begin")
    L_.extend(cupd)
    a("            if (take) busy <= 1'b1;")
    a("            else if (proc && last_q) busy <= 1'b0;")
    a("            if (proc) begin")
    a(f"                st <= last_st ? {sw}'d0 : st + 1'b1;")
    a(f"                q <= last_q ? {qw}'d0 : q + 1'b1;")
    a("            end")
    a("            if (proc && last_st) done <= 1'b1;")
    a("            else if (emit) done <= 1'b0;")
    a("        end")
    a("    end")
    a("endmodule")
    return "\n".join(L_) + "\n"


FMAC_FIFO_DEPTH = 0  # fmac: no FIFO; the datapath's output register is the unit's one-entry output buffer


def fmac_words(u: Unit) -> list[int]:
    """The weight memory image of an ``fmac`` unit: one word per step (address ``(b * C + c) * G + g``), weight
    (pe, s) of output ``g*PE + pe`` and input lane ``c*SIMD + s`` at bits ``[(pe*SIMD + s)*ww +: ww]``."""
    s = u.spec
    J, O, PE, SIMD, C, G = s["J"], s["O"], s["PE"], s["SIMD"], s["C"], s["G"]
    live = [kif_width(k) > 0 for k in u.in_lanes]
    _, ww = fmac_operand_bits(u)
    mask = (1 << ww) - 1
    wc = s["wcodes"]
    words = []
    for b in range(s["NB"]):
        for c in range(C):
            for g in range(G):
                word = 0
                for pe in range(PE):
                    o = g * PE + pe
                    for si in range(SIMD):
                        j = c * SIMD + si
                        e = s["elem_of"][b][j] if j < J else -1
                        if o < O and e >= 0 and live[j]:
                            word |= (int(wc[e][o]) & mask) << ((pe * SIMD + si) * ww)
                words.append(word)
    return words


def _dp_in_kifs(u: Unit) -> list[Kif]:
    """Format of each datapath input of a serial-requantization ``fmac`` (accumulator or bias value)."""
    from da4ml.types import minimal_kif

    return [tuple(int(v) for v in minimal_kif(q)) for q in u.dp.pipe.inp_qint]


def fmac_unit(top: str, u: Unit) -> str:
    """A dense layer folded over outputs and inputs: ``PE`` outputs x ``SIMD`` input elements per step.

    Step order (input-stationary): beat b, chunk c of SIMD lanes, group g of PE outputs; the weight memory holds
    one word per step.  Three stages: issue (memory address, operand select), registered memory read and
    operands -> registered products -> accumulate.  A frame's first step is issued only after the previous
    frame's accumulators were read (``lock``).  Two requantizations (the plan's ``requant``):

    * ``serial`` (outputs that differ only in their bias): the accumulators live in a G-word memory (read a
      step ahead, written back after the add; a ring of registers when G = 1); after the frame they are read
      out one group per cycle through a PE-lane da4ml datapath (``tails(acc + bias)``, the bias from a table of
      the group) and shift into the output register;
    * ``parallel``: a ring of G register entries that rotates once per accumulation (the head is always the
      group being accumulated, no multiplexer), read at once by the da4ml datapath over all outputs (the
      ``mac`` unit's), whose output register is the unit's output buffer.

    After another unit (``hold``) the input beat is read where that unit holds it and taken with its last
    step, instead of being copied."""
    s = u.spec
    dp = u.dp
    name = f"{top}_{u.name}"
    in_k = u.in_lanes
    wi = _bus_width(in_k)
    wo = _bus_width(u.out_lanes)
    in_off = _lane_offsets(in_k)
    J, O, NB, fx = s["J"], s["O"], s["NB"], s["fx"]
    PE, SIMD, C, G, K, S = s["PE"], s["SIMD"], s["C"], s["G"], s["K"], s["steps"]
    L = dp.stages
    live = [kif_width(k) > 0 for k in in_k]
    xw, ww = fmac_operand_bits(u)
    mw = xw + ww
    A = max(s["acc_bits"])
    sw, kw, cw = _bits(max(S - 1, 1)), _bits(max(K - 1, 1)), _bits(max(C - 1, 1))
    gw = _bits(max(G - 1, 1))
    memw = PE * SIMD * ww
    words = fmac_words(u)
    style = "logic" if s.get("memory") == "lut" else "block"
    L_ = []
    a = L_.append
    a(f"// {u.name}: dense {', '.join(u.nodes)} folded: {PE} output(s) x {SIMD} input element(s) per step, {O} outputs "
      f"over {NB} beat(s) of {J} element(s)")
    a(f"// ({S} steps per frame).  Weights (codes x 2^-{s['fw']}) in a {S} x {memw} memory with a registered read "
      f"(block RAM);")
    a(f"// inputs aligned to {fx} fraction bits; registered operands into {PE * SIMD} multiplier(s) (DSP blocks); "
      f"a ring of {G} x {PE}")
    a("// accumulators; the exact integer sums are requantized by a da4ml datapath once per frame.")
    L_ += _handshake_ports(name, wi, wo)
    a(f"    (* ram_style = \"{style}\" *)")
    a(f"    reg [{memw - 1}:0] wmem [0:{S - 1}];  // step t's weights: output g*{PE}+pe, lane c*{SIMD}+s at "
      f"[(pe*{SIMD}+s)*{ww} +: {ww}]")
    a("    initial begin")
    for t, word in enumerate(words):
        a(f"        wmem[{t}] = {memw}'h{word:x};")
    a("    end")
    hold = bool(s.get("hold"))
    if hold:  # the unit before holds its beat (registered valid and data) until this unit takes it
        a(f"    wire [{wi - 1}:0] xb = in_data;  // the beat being multiplied, held upstream until taken")
        a("    wire busy = in_valid;")
    else:
        a(f"    reg [{wi - 1}:0] xb;  // the beat being multiplied")
        a("    reg busy;  // xb holds a beat with steps left")
    a(f"    reg [{sw - 1}:0] st;  // step of the frame (memory address)")
    a(f"    reg [{kw - 1}:0] k;  // step of the beat")
    amem = s.get("requant") == "serial" and G >= 2  # accumulators in a memory (read a step ahead: G >= 2)
    if C > 1:  # with one chunk per beat, no operand select
        a(f"    reg [{cw - 1}:0] c;  // chunk of {SIMD} lane(s)")
    if C > 1 or amem:
        a(f"    reg [{gw - 1}:0] og;  // group of {PE} output(s)")
    if s.get("requant") == "serial":
        a(f"    // serial requantization: lane pe of the ring's head and its bias through a {PE}-lane datapath per "
          "cycle; results shift into the output register")
    a("    reg lock;  // the frame's last step is issued: the next frame waits for the datapath to take this one")
    a("    reg done;  // the accumulators hold a complete frame")
    serial = s.get("requant") == "serial"
    a("    reg occ;  // a result is in the datapath or in its output register")
    a("    reg ob_v;  // the output register holds a result not yet sent")
    if serial:
        a(f"    reg [{L}:0] vr, lr;  // beside the datapath: a group is valid / the frame's last group")
        a("    reg rd;  // read-out: one group of the ring per cycle into the requantization datapath")
        a(f"    reg [{gw - 1}:0] rg;  // group being read out")
        a(f"    wire last_rg = rg == {gw}'d{G - 1};")
        a("    wire emit = done && !occ && !rd;")
        a("    wire iss = busy && !lock;")
    else:
        a(f"    reg [{L - 1}:0] vp;  // valid bit beside the datapath stages")
        a("    wire emit = done && !occ;")
        a("    wire iss = busy && (!lock || emit);")
    a(f"    wire last_k = k == {kw}'d{K - 1};")
    a(f"    wire last_st = st == {sw}'d{S - 1};")
    if C > 1 or amem:
        a(f"    wire last_g = og == {gw}'d{G - 1};")
    a("    assign in_ready = iss && last_k;  // taken when its last step issues" if hold else
      "    assign in_ready = !busy || (iss && last_k);")
    if not hold:
        a("    wire take = in_valid && in_ready;")
    # stage 1: registered memory read and operands
    a(f"    reg [{memw - 1}:0] wq;  // memory output (registered read)")
    a("    reg v1, f1, l1, v2, f2, l2;  // valid, first chunk of the frame, last step; after stage 1 and 2")
    for si in range(SIMD):
        a(f"    reg signed [{xw - 1}:0] xr_{si};")
        srcs = [(cc, cc * SIMD + si) for cc in range(C) if cc * SIMD + si < J and live[cc * SIMD + si]]
        if not srcs:
            a(f"    wire signed [{xw - 1}:0] xs_{si} = {xw}'d0;")
        elif C == 1:
            j = srcs[0][1]
            a(f"    wire signed [{xw - 1}:0] xs_{si} = {_sext('xb', in_off[j], in_k[j], fx - int(in_k[j][2]), xw)};")
        else:
            a(f"    reg signed [{xw - 1}:0] xs_{si};")
            a("    always @* begin")
            a("        case (c)")
            for cc, j in srcs:
                a(f"            {cw}'d{cc}: xs_{si} = {_sext('xb', in_off[j], in_k[j], fx - int(in_k[j][2]), xw)};")
            a(f"            default: xs_{si} = {xw}'d0;")
            a("        endcase")
            a("    end")
    unread = []
    for pe in range(PE):
        for si in range(SIMD):
            b0 = (pe * SIMD + si) * ww
            a(f"    wire signed [{ww - 1}:0] w_{pe}_{si} = wq[{b0 + ww - 1}:{b0}];")
            a(f"    reg signed [{mw - 1}:0] m_{pe}_{si};  // registered product")
            if A < mw:
                unread.append(f"m_{pe}_{si}[{mw - 1}:{A}]")
    if amem:
        # accumulator memory: group g's PE sums in word g; stage 1 reads the step's group (read-out: group rg),
        # stage 2 adds and writes back (a group recurs >= G >= 2 steps later: the write lands before its read)
        a("    (* ram_style = \"block\" *)")
        a(f"    reg [{PE * A - 1}:0] amem [0:{G - 1}];  // group g: lane pe at [pe*{A} +: {A}]")
        a(f"    reg [{PE * A - 1}:0] aq;  // registered read")
        a(f"    reg [{gw - 1}:0] g1, g2;  // group of the step after stage 1 and 2")
        a("    reg rd1;  // aq holds a read-out group")
        a(f"    reg [{gw - 1}:0] rg1;")
        for pe in range(PE):
            a(f"    wire signed [{A - 1}:0] r_0_{pe} = aq[{(pe + 1) * A - 1}:{pe * A}];")
    else:  # accumulator ring
        for gg in range(G):
            for pe in range(PE):
                a(f"    reg signed [{A - 1}:0] r_{gg}_{pe};  // ring entry {gg}, lane {pe}")
    for pe in range(PE):
        terms = " + ".join(_resize(f"m_{pe}_{si}", mw, A) for si in range(SIMD))
        a(f"    wire signed [{A - 1}:0] sum_{pe} = (f2 ? {A}'d0 : r_0_{pe}) + {terms};")
    in_parts = []
    read: dict[int, int] = {}
    if serial:
        bw = max([kif_width(k) for (what, _), k in zip(dp.inputs, _dp_in_kifs(u)) if what == "bias"] + [1])
        if s.get("rq_bias") is not None:
            bias = list(s["rq_bias"]) + [0] * (G * PE - O)
            words_b = [sum((bias[gg * PE + pe] & ((1 << bw) - 1)) << (pe * bw) for pe in range(PE)) for gg in range(G)]
            L_.extend(_table("f_bias", "biases of group g (lane pe at [pe*bw +: bw])", PE * bw, gw, words_b, None, None))
            a(f"    wire [{PE * bw - 1}:0] bias_g = f_bias({'rg1' if amem else 'rg'});")
        for (what, pe), w in zip(dp.inputs, dp.in_widths):
            if w:
                in_parts.append(_slice(f"r_0_{pe}", 0, w) if what == "acc" else _slice("bias_g", pe * bw, w))
                if what == "acc":
                    read[pe] = max(read.get(pe, 0), w)
    else:
        for o, w in zip(dp.inputs, dp.in_widths):
            if w:
                gg, pe = divmod(int(o), PE)
                in_parts.append(_slice(f"r_{gg}_{pe}", 0, w))
                read[int(o)] = w
    w_in = sum(dp.in_widths)
    # the ring is the datapath's input register (it holds still from done until two cycles after emit), and the
    # datapath's output register, loaded once per result, is the unit's output buffer: no FIFO
    a(f"    wire [{w_in - 1}:0] dp_in = {_concat(in_parts)};")
    a("    wire pop = ob_v && out_ready;")
    a("    assign out_valid = ob_v;")
    if serial:
        lk = u.out_lanes[0]
        lw = kif_width(lk)
        dofs = _lane_offsets(dp.out_kifs)
        a(f"    wire [{sum(kif_width(k) for k in dp.out_kifs) - 1}:0] dp_out;")
        a(f"    {name}_dp dp (.clk(clk), .model_inp(dp_in), .model_out(dp_out));")
        grp = _concat([convert_expr("dp_out", dofs[pe], dp.out_kifs[pe], lk) for pe in range(PE)])
        a(f"    reg [{G * PE * lw - 1}:0] ov;  // output o at [o*{lw} +: {lw}] once the frame's groups are in")
        if G > 1:
            a(f"    wire [{G * PE * lw - 1}:0] ov_n = {{{grp}, ov[{G * PE * lw - 1}:{PE * lw}]}};")
        else:
            a(f"    wire [{G * PE * lw - 1}:0] ov_n = {grp};")
        a(f"    assign out_data = ov[{O * lw - 1}:0];")
        if G * PE > O:
            unread.append(f"ov[{G * PE * lw - 1}:{O * lw}]")
        for gg in range(G):
            for pe in range(PE):
                w = read.get(pe, 0) if gg == 0 else 0
                if gg == 0 and w < A:
                    unread.append(f"r_0_{pe}" if not w else f"r_0_{pe}[{A - 1}:{w}]")
    else:
        a(f"    {name}_dp dp (.clk(clk), .en(vp[{L - 1}]), .model_inp(dp_in), .model_out(out_data));")
        for gg in range(G):
            for pe in range(PE):
                o = gg * PE + pe
                w = read.get(o, 0)
                if w < A:
                    unread.append(f"r_{gg}_{pe}" if not w else f"r_{gg}_{pe}[{A - 1}:{w}]")
    if unread:
        a(f"    wire unused_fmac = ^{{{', '.join(unread)}}};  // for lint: bits the datapath does not read")
    a("    always @(posedge clk) begin")
    a("        wq <= wmem[st];")
    a("    end")
    if amem:
        a("    always @(posedge clk) begin")
        a(f"        if (v2) amem[g2] <= {_concat([f'sum_{pe}' for pe in range(PE)])};")
        a("        aq <= amem[rd ? rg : g1];")
        a("    end")
    a("    always @(posedge clk) begin")
    if not hold:
        a("        if (take) xb <= in_data;")
    for si in range(SIMD):
        a(f"        xr_{si} <= xs_{si};")
    for pe in range(PE):
        for si in range(SIMD):
            a(f"        m_{pe}_{si} <= xr_{si} * w_{pe}_{si};")
    a(f"        f1 <= st < {sw}'d{G};")
    a("        l1 <= last_st;")
    a("        f2 <= f1;")
    a("        l2 <= l1;")
    if amem:
        a("        g1 <= og;")
        a("        g2 <= g1;")
        a("        rg1 <= rg;")
    else:
        a("        if (v2) begin")
        for pe in range(PE):
            for gg in range(G - 1):
                a(f"            r_{gg}_{pe} <= r_{gg + 1}_{pe};")
            a(f"            r_{G - 1}_{pe} <= sum_{pe};")
        a("        end")
    if serial and not amem and G > 1:
        a("        else if (rd) begin  // rotate: the next group comes to the head")
        for pe in range(PE):
            for gg in range(G - 1):
                a(f"            r_{gg}_{pe} <= r_{gg + 1}_{pe};")
            a(f"            r_{G - 1}_{pe} <= r_0_{pe};")
        a("        end")
    if serial:
        a(f"        if (vr[{L}]) ov <= ov_n;")
    a("        if (rst) begin")
    a("            ob_v <= 1'b0;")
    if not hold:
        a("            busy <= 1'b0;")
    a(f"            st <= {sw}'d0;")
    a(f"            k <= {kw}'d0;")
    if C > 1:
        a(f"            c <= {cw}'d0;")
    if C > 1 or amem:
        a(f"            og <= {gw}'d0;")
    if amem:
        a("            rd1 <= 1'b0;")
    a("            lock <= 1'b0;")
    a("            done <= 1'b0;")
    a("            v1 <= 1'b0;")
    a("            v2 <= 1'b0;")
    a("            occ <= 1'b0;")
    if serial:
        a(f"            vr <= {L + 1}'d0;")
        a(f"            lr <= {L + 1}'d0;")
        a("            rd <= 1'b0;")
        a(f"            rg <= {gw}'d0;")
    else:
        a(f"            vp <= {L}'d0;")
    a("        end else begin")
    a("            occ <= occ ? !pop : emit;")
    if serial:
        if amem:
            a("            rd1 <= rd;")
            a(f"            vr <= {{vr[{L - 1}:0], rd1}};")
            a(f"            lr <= {{lr[{L - 1}:0], rd1 && rg1 == {gw}'d{G - 1}}};")
        else:
            a(f"            vr <= {{vr[{L - 1}:0], rd}};")
            a(f"            lr <= {{lr[{L - 1}:0], rd && last_rg}};")
        a("            if (emit) rd <= 1'b1;")
        a("            else if (last_rg) rd <= 1'b0;")
        a(f"            if (rd) rg <= last_rg ? {gw}'d0 : rg + 1'b1;")
        a(f"            if (lr[{L}]) ob_v <= 1'b1;")
        a("            else if (pop) ob_v <= 1'b0;")
    else:
        a(f"            vp <= {{vp[{L - 2}:0], emit}};" if L >= 2 else "            vp <= emit;")
        a(f"            if (vp[{L - 1}]) ob_v <= 1'b1;")
        a("            else if (pop) ob_v <= 1'b0;")
    a("            v1 <= iss;")
    a("            v2 <= v1;")
    if not hold:
        a("            if (take) busy <= 1'b1;")
        a("            else if (iss && last_k) busy <= 1'b0;")
    a("            if (iss) begin")
    a(f"                st <= last_st ? {sw}'d0 : st + 1'b1;")
    a(f"                k <= last_k ? {kw}'d0 : k + 1'b1;")
    if C > 1 or amem:
        a(f"                og <= last_g ? {gw}'d0 : og + 1'b1;")
    if C > 1:
        a(f"                if (last_k) c <= {cw}'d0;")
        a("                else if (last_g) c <= c + 1'b1;")
    a("            end")
    a("            if (iss && last_st) lock <= 1'b1;")
    a("            else if (rd && last_rg) lock <= 1'b0;" if serial else "            else if (emit) lock <= 1'b0;")
    a("            if (v2 && l2) done <= 1'b1;")
    a("            else if (emit) done <= 1'b0;")
    a("        end")
    a("    end")
    a("endmodule")
    return "\n".join(L_) + "\n"


def collect_unit(top: str, u: Unit) -> str:
    s = u.spec
    dp = u.dp
    name = f"{top}_{u.name}"
    in_k = u.in_lanes
    wi, wo = _bus_width(in_k), _bus_width(u.out_lanes)
    in_off = _lane_offsets(in_k)
    NB = s["NB"]
    L = dp.stages
    D = L + 3
    bw = _bits(max(NB - 1, 1))
    L_ = []
    a = L_.append
    a(f"// {u.name}: dense {', '.join(u.nodes)} unrolled: collects {NB} beat(s) of {s['J']} element(s), then one da4ml "
      "datapath")
    L_ += _handshake_ports(name, wi, wo)
    a(f"    reg [{NB * wi - 1}:0] sh;  // beat b of the frame at [b*{wi} +: {wi}] once full")
    a(f"    reg [{bw - 1}:0] b;")
    a("    reg full;")
    cdecl, cupd, credit = _credit(D, L, "emit", "pop")
    L_.extend(cdecl)
    a(f"    wire emit = full && {credit};")
    a("    assign in_ready = !full || emit;")
    a("    wire take = in_valid && in_ready;")
    a(f"    wire last_b = b == {bw}'d{NB - 1};")
    in_parts = []
    for (bb, j), w in zip(dp.inputs, dp.in_widths):
        if w:
            in_parts.append(_slice("sh", bb * wi + in_off[j], w))
    L_.extend(_dp_wires(u, f"{name}_dp", in_parts))
    aw = _bits(D - 1)
    a("    wire f_valid;")
    a("    wire pop = f_valid && out_ready;")
    a(f"    {top}_fifo #(.W({wo}), .D({D}), .AW({aw})) fifo (.clk(clk), .rst(rst), .push(vp[{L}]), .din(dp_out), "
      f".pop(pop), .valid(f_valid), .dout(out_data));")
    a("    assign out_valid = f_valid;")
    a("    always @(posedge clk) begin")
    if NB > 1:
        a(f"        if (take) sh <= {{in_data, sh[{NB * wi - 1}:{wi}]}};")
    else:
        a("        if (take) sh <= in_data;")
    a("        if (rst) begin")
    a(f"            b <= {bw}'d0;")
    a("            full <= 1'b0;")
    a("            occ <= 0;")
    a("            vp <= 0;")
    a("        end else begin")
    L_.extend(cupd)
    a("            if (take) begin")
    a(f"                b <= last_b ? {bw}'d0 : b + 1'b1;")
    a("                if (last_b) full <= 1'b1;")
    a("                else if (emit) full <= 1'b0;")
    a("            end else if (emit) full <= 1'b0;")
    a("        end")
    a("    end")
    a("endmodule")
    return "\n".join(L_) + "\n"


TLAST_MODES = ("required", "ignore")


def input_unit(top: str, plan: StreamPlan, tdata_in: int, tlast: str = "required") -> str:
    """The AXI4-Stream slave.  ``tlast``: ``required`` frames by tlast (checked against the beat count, a
    malformed frame repaired); ``ignore`` frames by the count alone and only flags a tlast that disagrees."""
    if tlast not in TLAST_MODES:
        raise ValueError(f"tlast = {tlast!r}; allowed: {', '.join(TLAST_MODES)}")
    name = f"{top}_axis_in"
    w = plan.in_lanes * plan.input_format.bits
    nb = plan.beats_in
    cw = _bits(max(nb - 1, 1))
    bits = plan.input_format.bits
    unused_hi = (f"\n    wire unused_tdata = ^s_tdata[{tdata_in - 1}:{w}];  // tdata bits past the beat's elements"
                 if tdata_in > w else "")
    head = f"""// AXI4-Stream slave: one beat = {plan.in_lanes} input element(s) of {bits} bits; {nb} beat(s) per frame.
"""
    ports = f"""module {name} (
    input clk,
    input rst,
    input [{tdata_in - 1}:0] s_tdata,
    input s_tvalid,
    output s_tready,
    input s_tlast,
    output out_valid,
    input out_ready,
    output [{w - 1}:0] out_data,
    output reg err
);
"""
    if tlast == "ignore":
        return head + f"""// tlast ignored (rtl.tlast: ignore): every {nb} accepted beat(s) are one frame, whatever
// s_tlast says.
// s_tlast is only compared with the count: a beat whose tlast differs from "this is beat {nb} of its frame"
// sets the sticky err flag (cleared by reset); framing goes on by the count.
""" + ports + f"""    reg [{cw - 1}:0] cnt;
    wire last = cnt == {cw}'d{nb - 1};
    assign s_tready = out_ready;
    assign out_valid = s_tvalid;
    assign out_data = s_tdata[{w - 1}:0];
    wire hs = s_tvalid && out_ready;{unused_hi}
    always @(posedge clk) begin
        if (rst) begin
            cnt <= {cw}'d0;
            err <= 1'b0;
        end else if (hs) begin
            cnt <= last ? {cw}'d0 : cnt + 1'b1;
            if (s_tlast != last) err <= 1'b1;
        end
    end
endmodule
"""
    return head + f"""// tlast required (rtl.tlast: required), checked against the beat count: a frame that ends
// early (tlast before beat {nb}) is completed with zero beats (s_tready low meanwhile); a frame that does
// not end on beat {nb} is computed from its first {nb} beats, and the beats after them are taken and
// dropped up to and including the next tlast.  Either sets the sticky err flag (cleared by reset).  So
// every tlast-delimited input frame gives exactly one output frame.
""" + ports + f"""    localparam NORMAL = 2'd0, FILL = 2'd1, DROP = 2'd2;
    reg [1:0] mode;
    reg [{cw - 1}:0] cnt;
    wire last = cnt == {cw}'d{nb - 1};
    assign s_tready = (mode == NORMAL && out_ready) || mode == DROP;
    assign out_valid = (mode == NORMAL && s_tvalid) || mode == FILL;
    assign out_data = mode == FILL ? {w}'d0 : s_tdata[{w - 1}:0];
    wire hs_in = s_tvalid && s_tready;
    wire hs_out = out_valid && out_ready;{unused_hi}
    always @(posedge clk) begin
        if (rst) begin
            mode <= NORMAL;
            cnt <= {cw}'d0;
            err <= 1'b0;
        end else if (mode == DROP) begin
            if (hs_in && s_tlast) mode <= NORMAL;
        end else if (hs_out) begin
            cnt <= last ? {cw}'d0 : cnt + 1'b1;
            if (mode == FILL) begin
                if (last) mode <= NORMAL;
            end else if (last && !s_tlast) begin
                mode <= DROP;
                err <= 1'b1;
            end else if (!last && s_tlast) begin
                mode <= FILL;
                err <= 1'b1;
            end
        end
    end
endmodule
"""


def output_unit(top: str, plan: StreamPlan, mode: str, out_elements: int, tdata_out: int, class_bits: int) -> str:
    name = f"{top}_axis_out"
    last = plan.units[-1]
    in_k = last.out_lanes
    wi = _bus_width(in_k)
    in_off = _lane_offsets(in_k)
    fmt = plan.output_format
    ob = fmt.bits
    fk = (int(fmt.signed), fmt.int_bits, fmt.frac_bits)
    n = plan.n_outputs
    n_logit_beats = -(-n // out_elements) if mode in ("logits", "both") else 0
    nbo = n_logit_beats + (1 if mode in ("class", "both") else 0)
    bw = _bits(max(nbo - 1, 1))
    # after an fmac unit (which holds its result until taken) the logits are read where they are held, and the
    # result is taken with the frame's last output beat: no copy
    hold = last.kind == "fmac"
    L_ = []
    a = L_.append
    a(f"// AXI4-Stream master: {nbo} beat(s) per frame; " + (
        f"beats 0..{n_logit_beats - 1} carry {out_elements} logit(s) each ({ob}-bit codes, element j of the beat at "
        f"[j*{ob} +: {ob}])" if n_logit_beats else "") + (
        ("; then " if n_logit_beats else "") + f"one beat with the class index in [{class_bits - 1}:0] (argmax, lowest "
        "index wins ties)" if mode != "logits" else "") + ".")
    a(f"module {name} (")
    a("    input clk,")
    a("    input rst,")
    a("    input in_valid,")
    a("    output in_ready,")
    a(f"    input [{wi - 1}:0] in_data,")
    a(f"    output [{tdata_out - 1}:0] m_tdata,")
    a("    output m_tvalid,")
    a("    input m_tready,")
    a("    output m_tlast")
    a(");")
    codes = []
    for j in range(n):
        lane = plan.output_order[j]
        a(f"    wire [{ob - 1}:0] y_{j} = {convert_expr('in_data', in_off[lane], in_k[lane], fk)};")
        codes.append(f"y_{j}")
    if hold:
        if n_logit_beats:
            a(f"    wire [{n * ob - 1}:0] vec = {_concat(codes)};  // held by the unit before until taken")
        a("    wire busy = in_valid;")
    else:
        if n_logit_beats:  # the logits of the frame being sent (class only: the index alone is kept)
            a(f"    reg [{n * ob - 1}:0] vec;")
        a("    reg busy;")
    a(f"    reg [{bw - 1}:0] beat;")
    a(f"    wire last_beat = beat == {bw}'d{nbo - 1};")
    if hold:
        a("    assign in_ready = m_tready && last_beat;  // the result is taken with the frame's last beat")
    else:
        a("    assign in_ready = !busy || (m_tready && last_beat);")
        a("    wire take = in_valid && in_ready;")
    if mode != "logits":
        # tournament: the lower-index side wins unless the higher-index side is strictly greater
        cmp = "$signed" if fmt.signed else ""
        level = [(f"y_{j}", f"{class_bits}'d{j}") for j in range(n)]
        li = 0
        while len(level) > 1:
            nxt = []
            for t in range(0, len(level) - 1, 2):
                (va, ia), (vb, ib) = level[t], level[t + 1]
                g = f"am{li}_{t // 2}"
                a(f"    wire sel_{g} = {cmp}({vb}) > {cmp}({va});")
                if len(level) > 2:  # the final's winning value is not needed, only its index
                    a(f"    wire [{ob - 1}:0] v_{g} = sel_{g} ? {vb} : {va};")
                a(f"    wire [{class_bits - 1}:0] i_{g} = sel_{g} ? {ib} : {ia};")
                nxt.append((f"v_{g}", f"i_{g}"))
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
            li += 1
        a(f"    wire [{class_bits - 1}:0] argmax = {level[0][1]};")
        if hold:
            a(f"    wire [{class_bits - 1}:0] cls = argmax;")
        else:
            a(f"    reg [{class_bits - 1}:0] cls;")
    a(f"    reg [{tdata_out - 1}:0] word;")
    a("    always @* begin")
    a("        case (beat)")
    for bt in range(n_logit_beats):
        lo = bt * out_elements
        hi = min(n, lo + out_elements)
        a(f"            {bw}'d{bt}: word = {_zext(f'vec[{hi * ob - 1}:{lo * ob}]', (hi - lo) * ob, tdata_out)};")
    if mode != "logits":
        a(f"            {bw}'d{nbo - 1}: word = {_zext('cls', class_bits, tdata_out)};")
    a(f"            default: word = {tdata_out}'d0;")
    a("        endcase")
    a("    end")
    a("    assign m_tdata = word;")
    a("    assign m_tvalid = busy;")
    a("    assign m_tlast = last_beat;")
    a("    always @(posedge clk) begin")
    if hold:
        a("        if (rst) begin")
        a(f"            beat <= {bw}'d0;")
        a("        end else if (busy && m_tready) begin")
        a(f"            beat <= last_beat ? {bw}'d0 : beat + 1'b1;")
        a("        end")
        a("    end")
        a("endmodule")
        return "\n".join(L_) + "\n"
    if n_logit_beats:
        a(f"        if (take) vec <= {_concat(codes)};")
    if mode != "logits":
        a("        if (take) cls <= argmax;")
    a("        if (rst) begin")
    a("            busy <= 1'b0;")
    a(f"            beat <= {bw}'d0;")
    a("        end else if (take) begin")
    a("            busy <= 1'b1;")
    a(f"            beat <= {bw}'d0;")
    a("        end else if (busy && m_tready) begin")
    a("            if (last_beat) busy <= 1'b0;")
    a(f"            beat <= last_beat ? {bw}'d0 : beat + 1'b1;")
    a("        end")
    a("    end")
    a("endmodule")
    return "\n".join(L_) + "\n"


def top_module(top: str, plan: StreamPlan, tdata_in: int, tdata_out: int, doc: str) -> str:
    L_ = ["`timescale 1 ns / 1 ps", doc.rstrip(), f"module {top} (",
          "    input clk,",
          "    input aresetn,",
          f"    input [{tdata_in - 1}:0] s_axis_tdata,",
          "    input s_axis_tvalid,",
          "    output s_axis_tready,",
          "    input s_axis_tlast,",
          f"    output [{tdata_out - 1}:0] m_axis_tdata,",
          "    output m_axis_tvalid,",
          "    input m_axis_tready,",
          "    output m_axis_tlast,",
          "    output tlast_err",
          ");"]
    a = L_.append
    a("    wire rst = !aresetn;")
    w0 = plan.in_lanes * plan.input_format.bits
    a("    wire c0_valid, c0_ready, in_ready_raw;")
    a(f"    wire [{w0 - 1}:0] c0_data;")
    a(f"    {top}_axis_in u_in (.clk(clk), .rst(rst), .s_tdata(s_axis_tdata), .s_tvalid(s_axis_tvalid), "
      ".s_tready(in_ready_raw), .s_tlast(s_axis_tlast), .out_valid(c0_valid), .out_ready(c0_ready), "
      ".out_data(c0_data), .err(tlast_err));")
    a("    assign s_axis_tready = in_ready_raw && aresetn;")
    for i, u in enumerate(plan.units):
        wo = _bus_width(u.out_lanes)
        a(f"    wire c{i + 1}_valid, c{i + 1}_ready;")
        a(f"    wire [{wo - 1}:0] c{i + 1}_data;")
        a(f"    {top}_{u.name} u{i} (.clk(clk), .rst(rst), .in_valid(c{i}_valid), .in_ready(c{i}_ready), "
          f".in_data(c{i}_data), .out_valid(c{i + 1}_valid), .out_ready(c{i + 1}_ready), .out_data(c{i + 1}_data));")
    n = len(plan.units)
    a("    wire m_valid_raw;")
    a(f"    {top}_axis_out u_out (.clk(clk), .rst(rst), .in_valid(c{n}_valid), .in_ready(c{n}_ready), "
      f".in_data(c{n}_data), .m_tdata(m_axis_tdata), .m_tvalid(m_valid_raw), .m_tready(m_axis_tready), "
      ".m_tlast(m_axis_tlast));")
    a("    assign m_axis_tvalid = m_valid_raw && aresetn;")
    a("endmodule")
    return "\n".join(L_) + "\n"


def unit_module(top: str, u: Unit) -> str:
    return {"window": window_unit, "mac": mac_unit, "collect": collect_unit, "fmac": fmac_unit}[u.kind](top, u)


def datapath_modules(top: str, u: Unit) -> dict[str, str]:
    from da4ml.codegen.rtl.verilog.pipeline import pipeline_logic_gen

    if u.spec.get("gather"):  # its outputs are its inputs: the plan keeps the (trivial) pipeline for the emulator
        return {}
    mods = pipeline_logic_gen(u.dp.pipe, f"{top}_{u.name}_dp", print_latency=False)
    if u.kind == "fmac" and u.spec.get("requant") != "serial":
        name = f"{top}_{u.name}_dp"
        mods[name] = _fmac_dp(mods[name])
    return mods


def _fmac_dp(text: str) -> str:
    """da4ml's pipeline module as an ``fmac`` unit uses it: no input register (the unit's accumulator ring holds
    still while the first stage reads it) and an output register loaded only when ``en`` (the result's valid
    bit), which is the unit's output buffer."""
    import re

    subs = [(r"(\n\s*input clk,\n)", r"\1    input en,\n"),
            (r"\breg( \[\d+:0\])? stage0_inp;", r"wire\1 stage0_inp = model_inp;"),
            (r"\n\s*stage0_inp <= model_inp;", ""),
            (r"\bmodel_out <= (stage\d+_out);", r"if (en) model_out <= \1;")]
    for pat, rep in subs:
        text, n = re.subn(pat, rep, text)
        if n != 1:
            raise RuntimeError(f"internal error: da4ml's pipeline module changed form ({pat!r} matched {n} times)")
    return text


def round_bytes(bits: int) -> int:
    return max(8, -(-bits // 8) * 8)


def stream_geometry(plan: StreamPlan, mode: str, out_elements: int) -> dict[str, Any]:
    n = plan.n_outputs
    class_bits = max(1, (n - 1).bit_length())
    logit_beats = -(-n // out_elements) if mode in ("logits", "both") else 0
    beats_out = logit_beats + (1 if mode in ("class", "both") else 0)
    out_bits = max(out_elements * plan.output_format.bits if logit_beats else 0,
                   class_bits if mode != "logits" else 0)
    return {"tdata_in": round_bytes(plan.in_lanes * plan.input_format.bits), "tdata_out": round_bytes(out_bits),
            "class_bits": class_bits, "beats_out": beats_out, "logit_beats": logit_beats}
