"""A kdhw AXI4-Stream core as a Vivado IP, a Zynq block design around it and a PYNQ driver (``kdhw package``).

``package_stream_core(rtl_dir, board, out_dir)`` takes the folder ``kdhw rtl --mode stream`` writes and
produces, deterministically (the same inputs give the same bytes):

* ``ip/``: an IP repository: the core's Verilog, a wrapper ``<top>_axis`` that puts it behind byte-aligned
  AXI4-Stream ports an AXI DMA can drive (the interfaces declared with ``X_INTERFACE_INFO`` attributes), and
  ``component.xml``, kdhw's own IEEE 1685-2009 IP-XACT description of it (bus interfaces ``s_axis``,
  ``m_axis``, ``aclk`` with ``ASSOCIATED_BUSIF``/``ASSOCIATED_RESET``, ``aresetn`` active low);
* ``package_ip.tcl``: Vivado's own packager (``ipx::package_project``) run on the same sources, for users
  who prefer Vivado's ``component.xml`` (it rewrites ``ip/component.xml``);
* for Zynq boards with a board part (pynq-z2, zcu102): ``bd_<board>.tcl``, a block design (processing
  system + AXI DMA + the core, clocks and resets, address map) through ``write_bitstream``, copying the
  ``.bit``/``.hwh`` pair PYNQ loads into ``pynq/``, with post-route utilization and timing reports; and
  ``pynq/kdhw_codec.py`` (pure numpy: float rows -> DMA bytes -> outputs, exactly as ``rtl.json`` packs the
  beats) + ``pynq/kdhw_overlay.py`` (the PYNQ driver: allocate, transfer, unpack).

The wrapper counts a frame's input beats itself, so one DMA transfer carries any number of whole frames;
the DMA's ``tlast`` (end of a transfer) is remembered per frame and put back on the last output beat of the
batch's last frame, so the receive transfer ends exactly with its batch.

Nothing here runs Vivado; ``docs/xilinx.md`` says what was and was not checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path
from typing import Any

from kdhw.boards import Board
from kdhw.errors import InputError
from kdhw.util.atomic import atomic_dir, write_json, write_text

from .synth import tcl_word

VENDOR, LIBRARY, VERSION = "kdhw", "kdhw", "1.0"
DMA_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024)  # AXI DMA stream widths (PG021)
DMA_LENGTH_BITS = 26  # c_sg_length_width: one transfer moves at most 2**26 - 1 bytes
FLAG_FIFO_LOG2 = 5  # batch-end flags: up to 32 frames between the input and the output side
SPIRIT = "http://www.spiritconsortium.org/XMLSchema/SPIRIT/1685-2009"
XILINX = "http://www.xilinx.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
# Vivado's family names (supported_families) of kdhw's catalog families
VIVADO_FAMILY = {"zynq7000": "zynq", "zynquplus": "zynquplus", "artix7": "artix7", "kintex7": "kintex7",
                 "virtex7": "virtex7", "virtexuplus": "virtexuplus", "kintexuplus": "kintexuplus"}
# Boards whose block design kdhw writes: the board part (Vivado board files give the processing system's
# DDR/MIO preset) and the processing system's names.  Pin names as in hls4ml 1.3.0's VivadoAccelerator
# designs for the same boards.
BOARD_PARTS = {"pynq-z2": "tul.com.tw:pynq-z2:part0:1.0", "zcu102": "xilinx.com:zcu102:part0:3.3"}
PS = {
    "zynq7000": {
        "vlnv": "xilinx.com:ip:processing_system7", "rule": "xilinx.com:bd_rule:processing_system7",
        "rule_config": 'make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"',
        "master": "M_AXI_GP0", "slave": "S_AXI_HP0", "clk": "FCLK_CLK0",
        "config": lambda mhz: {"PCW_USE_M_AXI_GP0": "1", "PCW_USE_S_AXI_HP0": "1",
                               "PCW_FPGA0_PERIPHERAL_FREQMHZ": f"{mhz:g}"},
    },
    "zynquplus": {
        "vlnv": "xilinx.com:ip:zynq_ultra_ps_e", "rule": "xilinx.com:bd_rule:zynq_ultra_ps_e",
        "rule_config": 'apply_board_preset "1"',
        "master": "M_AXI_HPM0_FPD", "slave": "S_AXI_HP0_FPD", "clk": "pl_clk0",
        "config": lambda mhz: {"PSU__USE__M_AXI_GP0": "1", "PSU__USE__M_AXI_GP1": "0", "PSU__USE__M_AXI_GP2": "0",
                               "PSU__USE__S_AXI_GP2": "1", "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": f"{mhz:g}"},
    },
}
TEMPLATES = resources.files("kdhw").joinpath("templates")
AXIS_SIGNALS = ("tdata", "tvalid", "tready", "tlast")
PACKAGE_FILE = "package.json"


def load_stream_meta(rtl_dir: str | Path) -> dict[str, Any]:
    """``rtl.json`` of a stream-form RTL folder; one-line InputError for anything else."""
    rtl_dir = Path(rtl_dir)
    p = rtl_dir / "rtl.json"
    if not p.is_file():
        raise InputError(f"{rtl_dir}: no rtl.json; generate the core with `kdhw rtl M.onnx --out DIR --mode stream`")
    try:
        meta = json.loads(p.read_text())
    except ValueError:
        raise InputError(f"{p}: not readable JSON") from None
    if meta.get("mode") != "stream":
        raise InputError(f"{rtl_dir}: a {meta.get('mode', 'parallel')}-form core; kdhw package needs the AXI4-Stream "
                         "form (`kdhw rtl M.onnx --out DIR --mode stream`)")
    missing = [f for f in meta["verilog_files"] if not (rtl_dir / f).is_file()]
    if missing:
        raise InputError(f"{rtl_dir}: rtl.json lists files that are not there: {', '.join(missing[:3])}")
    return meta


def dma_width(bits: int, what: str) -> int:
    """The narrowest AXI DMA stream width that holds ``bits``."""
    for w in DMA_WIDTHS:
        if w >= bits:
            return w
    raise InputError(f"{what} is {bits} bits wide; an AXI DMA stream carries at most {DMA_WIDTHS[-1]} "
                     "(generate the core with fewer --in-elements / --out-elements)")


def layout(meta: dict[str, Any], name: str) -> dict[str, Any]:
    """What the wrapper, the IP-XACT file, the Tcl and the PYNQ codec share, taken from ``rtl.json``."""
    p, st = meta["ports"], meta["stream"]
    w_in, w_out = int(p["s_axis_tdata"]["width"]), int(p["m_axis_tdata"]["width"])
    dw_in, dw_out = dma_width(w_in, "the core's s_axis_tdata"), dma_width(w_out, "the core's m_axis_tdata")
    return {
        "ip_name": name, "core_top": meta["top"], "vlnv": f"{VENDOR}:{LIBRARY}:{name}:{VERSION}",
        "core_tdata_in": w_in, "core_tdata_out": w_out, "dma_tdata_in": dw_in, "dma_tdata_out": dw_out,
        "bytes_per_beat_in": dw_in // 8, "bytes_per_beat_out": dw_out // 8,
        "beats_in": int(st["beats_in"]), "beats_out": int(st["beats_out"]),
        "in_elements_of_beat": st["in_elements_of_beat"], "in_elements": int(st["in_elements"]),
        "out_elements": int(st["out_elements"]), "logit_beats": int(st["logit_beats"]), "output": st["output"],
        "class_bits": int(st["class_bits"]), "n_inputs": int(meta["n_inputs"]), "n_outputs": int(meta["n_outputs"]),
        "input_shape": [int(s) for s in meta["input_shape"]],
        "input_format": {k: meta["input_format"][k] for k in ("bits", "frac_bits", "signed", "lo", "hi")}
        | {"rounding": meta["input_format"].get("rounding", "ROUND")},
        "output_format": {k: meta["output_format"][k] for k in ("bits", "frac_bits", "signed", "lo", "hi")},
        "max_transfer_bytes": 2**DMA_LENGTH_BITS - 1,
    }


# ----------------------------------------------------------------------------------------------- wrapper


def wrapper_verilog(lay: dict[str, Any]) -> str:
    """The IP's top module: the core behind DMA-width ports, its interfaces declared for Vivado."""
    name, top = lay["ip_name"], lay["core_top"]
    w_in, w_out, dw_in, dw_out = lay["core_tdata_in"], lay["core_tdata_out"], lay["dma_tdata_in"], lay["dma_tdata_out"]
    beats = lay["beats_in"]
    cw = max(1, math.ceil(math.log2(beats))) if beats > 1 else 1
    fd = FLAG_FIFO_LOG2
    pad = f"{{{{{dw_out - w_out}{{1'b0}}}}, core_m_tdata}}" if dw_out > w_out else "core_m_tdata"

    def axis(bus: str, sig: str) -> str:
        return f'    (* X_INTERFACE_INFO = "xilinx.com:interface:axis:1.0 {bus} {sig}" *)\n'

    return f"""// Generated by kdhw package (kdhw.hw.vivado); do not edit.  The IP's top: the kdhw AXI4-Stream core
// {top} behind byte-aligned ports an AXI DMA drives.
//  * s_axis: {dw_in}-bit beats; the core takes bits [{w_in - 1}:0] (the rest are ignored).  The wrapper counts the
//    {beats} beats of a frame and gives the core its tlast, so one DMA transfer carries any number of whole
//    frames.  The DMA's tlast (the transfer's last beat) marks the batch's last frame; a tlast inside a frame
//    ends that frame early (the core completes it with zeros and raises tlast_err).
//  * m_axis: {dw_out}-bit beats, the core's {w_out} bits zero-extended; tlast only on the last beat of a batch's
//    last frame, so the DMA's receive transfer ends exactly with its batch.
//  * Frames between input and output are tracked by a {2 ** fd}-entry flag FIFO; s_axis_tready drops while it is full.
`timescale 1ns / 1ps
`default_nettype none
module {name} (
    (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 aclk CLK" *)
    (* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axis:m_axis, ASSOCIATED_RESET aresetn" *)
    input  wire              aclk,
    (* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 aresetn RST" *)
    (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)
    input  wire              aresetn,
{axis("s_axis", "TDATA")}    input  wire [{dw_in - 1}:0]       s_axis_tdata,
{axis("s_axis", "TVALID")}    input  wire              s_axis_tvalid,
{axis("s_axis", "TREADY")}    output wire              s_axis_tready,
{axis("s_axis", "TLAST")}    input  wire              s_axis_tlast,
{axis("m_axis", "TDATA")}    output wire [{dw_out - 1}:0]       m_axis_tdata,
{axis("m_axis", "TVALID")}    output wire              m_axis_tvalid,
{axis("m_axis", "TREADY")}    input  wire              m_axis_tready,
{axis("m_axis", "TLAST")}    output wire              m_axis_tlast,
    output wire              tlast_err
);
    localparam BEATS_IN = {beats};

    reg  [{cw - 1}:0] in_beat;
    reg  [{2 ** fd - 1}:0] batch_end;
    reg  [{fd}:0] wr, rd;
    wire flags_full = (wr[{fd}] != rd[{fd}]) && (wr[{fd - 1}:0] == rd[{fd - 1}:0]);
    wire core_s_tready, core_m_tvalid, core_m_tlast;
    wire [{w_out - 1}:0] core_m_tdata;
    wire frame_end = (in_beat == BEATS_IN - 1) || s_axis_tlast;
    wire s_fire = s_axis_tvalid && s_axis_tready;
    wire m_fire = m_axis_tvalid && m_axis_tready;

    assign s_axis_tready = core_s_tready && !flags_full;
    assign m_axis_tvalid = core_m_tvalid;
    assign m_axis_tdata = {pad};
    assign m_axis_tlast = core_m_tlast && batch_end[rd[{fd - 1}:0]];

    always @(posedge aclk) begin
        if (!aresetn) begin
            in_beat <= 0;
            wr <= 0;
            rd <= 0;
        end else begin
            if (s_fire) begin
                in_beat <= frame_end ? 0 : in_beat + 1'b1;
                if (frame_end) begin
                    batch_end[wr[{fd - 1}:0]] <= s_axis_tlast;
                    wr <= wr + 1'b1;
                end
            end
            if (m_fire && core_m_tlast)
                rd <= rd + 1'b1;
        end
    end

    {top} core (
        .clk(aclk), .aresetn(aresetn),
        .s_axis_tdata(s_axis_tdata[{w_in - 1}:0]), .s_axis_tvalid(s_axis_tvalid && !flags_full),
        .s_axis_tready(core_s_tready), .s_axis_tlast(frame_end),
        .m_axis_tdata(core_m_tdata), .m_axis_tvalid(core_m_tvalid), .m_axis_tready(m_axis_tready),
        .m_axis_tlast(core_m_tlast), .tlast_err(tlast_err)
    );
endmodule
`default_nettype wire
"""


def wrapper_ports(lay: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(name, direction, width) of the IP's ports, in declaration order."""
    return [("aclk", "in", 1), ("aresetn", "in", 1),
            ("s_axis_tdata", "in", lay["dma_tdata_in"]), ("s_axis_tvalid", "in", 1), ("s_axis_tready", "out", 1),
            ("s_axis_tlast", "in", 1),
            ("m_axis_tdata", "out", lay["dma_tdata_out"]), ("m_axis_tvalid", "out", 1), ("m_axis_tready", "in", 1),
            ("m_axis_tlast", "out", 1), ("tlast_err", "out", 1)]


# ----------------------------------------------------------------------------------------------- IP-XACT


def component_xml(lay: dict[str, Any], files: list[str], family: str) -> bytes:
    """kdhw's IEEE 1685-2009 IP-XACT ``component.xml`` for the wrapper (``files``: paths relative to it,
    the wrapper last).  Element order follows the 1685-2009 schema; no dates or checksums, so it is the same
    bytes every time."""
    ET.register_namespace("spirit", SPIRIT)
    ET.register_namespace("xilinx", XILINX)
    ET.register_namespace("xsi", XSI)

    def s(tag: str) -> str:
        return f"{{{SPIRIT}}}{tag}"

    def x(tag: str) -> str:
        return f"{{{XILINX}}}{tag}"

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        e = ET.SubElement(parent, tag, {k: v for k, v in attrs.items()})
        if text is not None:
            e.text = text
        return e

    def vlnv_attrs(vendor: str, library: str, name: str, version: str) -> dict[str, str]:
        return {s("vendor"): vendor, s("library"): library, s("name"): name, s("version"): version}

    root = ET.Element(s("component"), {f"{{{XSI}}}schemaLocation": f"{SPIRIT} {SPIRIT}/index.xsd"})
    for tag, val in (("vendor", VENDOR), ("library", LIBRARY), ("name", lay["ip_name"]), ("version", VERSION)):
        sub(root, s(tag), val)
    bis = sub(root, s("busInterfaces"))

    def bus(name: str, lib: str, kind: str, role: str, maps: list[tuple[str, str]],
            params: tuple[tuple[str, str], ...] = ()) -> None:
        bi = sub(bis, s("busInterface"))
        sub(bi, s("name"), name)
        ET.SubElement(bi, s("busType"), vlnv_attrs("xilinx.com", lib, kind, "1.0"))
        ET.SubElement(bi, s("abstractionType"), vlnv_attrs("xilinx.com", lib, f"{kind}_rtl", "1.0"))
        sub(bi, s(role))
        pms = sub(bi, s("portMaps"))
        for logical, physical in maps:
            pm = sub(pms, s("portMap"))
            sub(sub(pm, s("logicalPort")), s("name"), logical)
            sub(sub(pm, s("physicalPort")), s("name"), physical)
        if params:
            ps = sub(bi, s("parameters"))
            for pname, pval in params:
                p = sub(ps, s("parameter"))
                sub(p, s("name"), pname)
                sub(p, s("value"), pval, **{s("id"): f"BUSIFPARAM_VALUE.{name.upper()}.{pname}"})

    for b, role in (("s_axis", "slave"), ("m_axis", "master")):
        bus(b, "interface", "axis", role, [(sig.upper(), f"{b}_{sig}") for sig in AXIS_SIGNALS])
    bus("aresetn", "signal", "reset", "slave", [("RST", "aresetn")], (("POLARITY", "ACTIVE_LOW"),))
    bus("aclk", "signal", "clock", "slave", [("CLK", "aclk")],
        (("ASSOCIATED_BUSIF", "s_axis:m_axis"), ("ASSOCIATED_RESET", "aresetn")))

    model = sub(root, s("model"))
    views = sub(model, s("views"))
    for view, disp, env in (("xilinx_anylanguagesynthesis", "Synthesis", ":vivado.xilinx.com:synthesis"),
                            ("xilinx_anylanguagebehavioralsimulation", "Simulation", ":vivado.xilinx.com:simulation")):
        v = sub(views, s("view"))
        sub(v, s("name"), view)
        sub(v, s("displayName"), disp)
        sub(v, s("envIdentifier"), env)
        sub(v, s("language"), "Verilog")
        sub(v, s("modelName"), lay["ip_name"])
        sub(sub(v, s("fileSetRef")), s("localName"), f"{view}_view_fileset")
    ports = sub(model, s("ports"))
    for pname, direction, width in wrapper_ports(lay):
        port = sub(ports, s("port"))
        sub(port, s("name"), pname)
        wire = sub(port, s("wire"))
        sub(wire, s("direction"), direction)
        if width > 1:
            vec = sub(wire, s("vector"))
            sub(vec, s("left"), str(width - 1), **{s("format"): "long"})
            sub(vec, s("right"), "0", **{s("format"): "long"})
        tds = sub(sub(wire, s("wireTypeDefs")), s("wireTypeDef"))
        sub(tds, s("typeName"), "wire")
        sub(tds, s("viewNameRef"), "xilinx_anylanguagesynthesis")
        sub(tds, s("viewNameRef"), "xilinx_anylanguagebehavioralsimulation")

    fsets = sub(root, s("fileSets"))
    for view in ("xilinx_anylanguagesynthesis", "xilinx_anylanguagebehavioralsimulation"):
        fs = sub(fsets, s("fileSet"))
        sub(fs, s("name"), f"{view}_view_fileset")
        for f in files:
            fe = sub(fs, s("file"))
            sub(fe, s("name"), f)
            sub(fe, s("fileType"), "verilogSource")
    sub(root, s("description"),
        f"kdhw AXI4-Stream core {lay['core_top']} for an AXI DMA: {lay['beats_in']} input beats of "
        f"{lay['dma_tdata_in']} bits and {lay['beats_out']} output beats of {lay['dma_tdata_out']} bits per frame")
    params = sub(root, s("parameters"))
    p = sub(params, s("parameter"))
    sub(p, s("name"), "Component_Name")
    sub(p, s("value"), f"{lay['ip_name']}_v1_0", **{s("resolve"): "user", s("id"): "PARAM_VALUE.Component_Name",
                                                     s("order"): "1"})
    ext = sub(sub(root, s("vendorExtensions")), x("coreExtensions"))
    fams = sub(ext, x("supportedFamilies"))
    sub(fams, x("family"), VIVADO_FAMILY.get(family, family), **{x("lifeCycle"): "Production"})
    sub(sub(ext, x("taxonomies")), x("taxonomy"), "/UserIP")
    sub(ext, x("displayName"), f"kdhw {lay['core_top']} (AXI4-Stream, DMA)")
    sub(ext, x("definitionSource"), "kdhw")
    sub(ext, x("coreRevision"), "1")
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


# ----------------------------------------------------------------------------------------------- Tcl + driver


def _fill(template: str, fields: dict[str, str]) -> str:
    text = TEMPLATES.joinpath(template).read_text()
    for k, v in fields.items():
        text = text.replace(f"@{k}@", v)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError(f"internal error: template {template} has unfilled fields {left}")
    return text


def package_ip_tcl(lay: dict[str, Any], board: Board, files: list[str]) -> str:
    return _fill("vivado_package_ip.tcl", {
        "PART": tcl_word(board.part), "NAME": tcl_word(lay["ip_name"]), "VENDOR": tcl_word(VENDOR),
        "LIBRARY": tcl_word(LIBRARY), "VERSION": tcl_word(VERSION),
        "FILES": " ".join(tcl_word(f) for f in files),
        "DISPLAY": tcl_word(f"kdhw {lay['core_top']} (AXI4-Stream, DMA)"),
    })


def block_design_tcl(lay: dict[str, Any], board: Board) -> str:
    ps = PS[board.family]
    cfg = " ".join(f"CONFIG.{k} {tcl_word(v)}" for k, v in ps["config"](board.clock_mhz).items())
    dma = {"c_include_sg": "0", "c_sg_length_width": str(DMA_LENGTH_BITS), "c_sg_include_stscntrl_strm": "0",
           "c_include_mm2s": "1", "c_include_s2mm": "1",
           "c_m_axis_mm2s_tdata_width": str(lay["dma_tdata_in"]),
           "c_m_axi_mm2s_data_width": str(max(32, lay["dma_tdata_in"])),
           "c_s_axis_s2mm_tdata_width": str(lay["dma_tdata_out"]),
           "c_m_axi_s2mm_data_width": str(max(32, lay["dma_tdata_out"])),
           "c_mm2s_burst_size": "16", "c_s2mm_burst_size": "16"}
    return _fill("vivado_zynq_bd.tcl", {
        "BOARD": tcl_word(board.name), "PART": tcl_word(board.part), "BOARD_PART": tcl_word(BOARD_PARTS[board.name]),
        "VLNV": tcl_word(lay["vlnv"]), "PS_VLNV": tcl_word(ps["vlnv"]), "PS_RULE": tcl_word(ps["rule"]),
        "PS_RULE_CONFIG": "{" + ps["rule_config"] + "}", "PS_CONFIG": cfg,
        "PS_MASTER": tcl_word(ps["master"]), "PS_SLAVE": tcl_word(ps["slave"]), "PS_CLK": tcl_word(ps["clk"]),
        "DMA_CONFIG": " ".join(f"CONFIG.{k} {{{v}}}" for k, v in dma.items()),
        "CLOCK_MHZ": f"{board.clock_mhz:g}",
    })


def codec_source(lay: dict[str, Any]) -> str:
    return _fill("pynq_codec.py.in", {"LAYOUT": json.dumps(lay, sort_keys=True, indent=1)})


def overlay_source(lay: dict[str, Any], board: Board) -> str:
    return _fill("pynq_overlay.py.in", {"BOARD": board.name, "NAME": lay["ip_name"]})


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def package_stream_core(rtl_dir: str | Path, board: Board, out_dir: str | Path,
                        name: str | None = None) -> dict[str, Any]:
    """Write the IP repository, the packaging Tcl and (Zynq boards) the block design and PYNQ driver for the
    stream core in ``rtl_dir`` into ``out_dir`` (atomic); returns what ``package.json`` records."""
    rtl_dir, out_dir = Path(rtl_dir), Path(out_dir)
    if board.vendor != "xilinx":
        raise InputError(f"board {board.name} is a {board.vendor} board; kdhw package writes Vivado IP for "
                         "Xilinx boards (kdhw boards lists them)")
    meta = load_stream_meta(rtl_dir)
    top = str(meta["top"])
    name = name or f"{top}_axis"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name == top:
        raise InputError(f"IP name {name!r} must be a Verilog identifier other than the core's top ({top})")
    lay = layout(meta, name)
    core_files = [str(f) for f in meta["verilog_files"]]
    wrapper = f"src/{name}.v"
    taken = wrapper in core_files or any(re.search(rf"^\s*module\s+{name}\b", (rtl_dir / f).read_text(), re.M)
                                          for f in core_files)
    if taken:
        raise InputError(f"{rtl_dir}: the core already has a module or file named {name}; choose another --name")
    files = core_files + [wrapper]
    has_bd = board.name in BOARD_PARTS and board.family in PS
    with atomic_dir(out_dir) as tmp:
        ip = tmp / "ip"
        for f in core_files:
            (ip / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rtl_dir / f, ip / f)
        write_text(ip / wrapper, wrapper_verilog(lay))
        (ip / "component.xml").write_bytes(component_xml(lay, files, board.family))
        write_text(tmp / "package_ip.tcl", package_ip_tcl(lay, board, files))
        written = ["ip/component.xml", *[f"ip/{f}" for f in files], "package_ip.tcl"]
        if has_bd:
            bd = f"bd_{board.name}.tcl"
            write_text(tmp / bd, block_design_tcl(lay, board))
            (tmp / "pynq").mkdir()
            write_text(tmp / "pynq" / "kdhw_codec.py", codec_source(lay))
            write_text(tmp / "pynq" / "kdhw_overlay.py", overlay_source(lay, board))
            written += [bd, "pynq/kdhw_codec.py", "pynq/kdhw_overlay.py"]
        info = {
            "generator": "kdhw package (kdhw.hw.vivado)", "board": board.name, "part": board.part,
            "family": board.family, "vlnv": lay["vlnv"], "ip_top": name, "core_top": top,
            "rtl_sha256": _sha256([rtl_dir / "rtl.json", *[rtl_dir / f for f in core_files]]),
            "layout": lay, "files": written,
            "block_design": f"bd_{board.name}.tcl" if has_bd else None,
            "note": None if has_bd else (f"no block design for {board.name}: kdhw writes one for Zynq boards with a "
                                         f"known board part ({', '.join(BOARD_PARTS)}); add the IP in ip/ to your "
                                         "own design"),
            "run": ([f"vivado -mode batch -source bd_{board.name}.tcl   (bitstream + pynq/kdhw_overlay.bit/.hwh)"]
                    if has_bd else []) + ["vivado -mode batch -source package_ip.tcl   (optional: Vivado's own "
                                          "component.xml in ip/)"],
        }
        write_json(tmp / PACKAGE_FILE, info)
    return info
