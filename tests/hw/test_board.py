"""kdhw board: bitstreams for the iCEBreaker and the ULX3S, proved at the board's pins.

Each bitstream is built once per module (``builds``): the digits MLP for the iCEBreaker in this process
(200 frames through the board top's RTL, 20 through the netlist decoded from its bitstream), and, in a child
process at the same time (the tools are single-threaded; two cores), the Conv1D student for the iCEBreaker and
the MLP for the ULX3S.  The test bitstream for the decoded-netlist check runs the link at 1 Mbaud (12 clocks per
bit at 12 MHz; the FT2232H does 12 Mbaud): that simulation runs the bitstream's own parameters and costs clock
cycles per UART bit, and `kdhw board`'s default 115200 run of the same check is measured in docs/board.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdhw.cli import main

ROOT = Path(__file__).resolve().parents[2]
TEST_BAUD = 1_000_000


def _tools_present() -> bool:
    return all(shutil.which(t) for t in ("yosys", "nextpnr-ice40", "icepack", "iceunpack", "icebox_vlog", "iverilog"))


needs_tools = pytest.mark.skipif(not _tools_present(), reason="open FPGA tools (apt: yosys nextpnr-ice40 "
                                                               "fpga-icestorm iverilog) missing")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kdhw.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def builds(qonnx_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Stream cores of the conftest MLP (digits) and Conv1D (MNIST-1D) students and three board folders."""
    from kdhw.flows.board import build_board
    from kdhw.hw.rtl import qonnx_to_rtl

    if not _tools_present():
        pytest.skip("open FPGA tools missing")
    root = tmp_path_factory.mktemp("board")
    out: dict[str, Any] = {"root": root}
    for kind in ("mlp", "conv1d"):
        path, x = qonnx_models[kind]
        qonnx_to_rtl(path, root / f"{kind}_stream", mode="stream")
        np.save(root / f"{kind}_x.npy", x)
        out[kind] = (path, root / f"{kind}_stream", x)
    child: dict[str, Any] = {}

    def background() -> None:
        child["conv1d"] = _cli("board", str(root / "conv1d_stream"), "--board", "icebreaker", "--out",
                               str(root / "ice_conv1d"), "--sim-rows", "12", "--bitstream-rows", "0", "--inputs",
                               str(root / "conv1d_x.npy"), "-q")
        child["ulx"] = _cli("board", str(root / "mlp_stream"), "--board", "ulx3s-85f", "--out", str(root / "ulx_mlp"),
                            "--sim-rows", "12", "--inputs", str(root / "mlp_x.npy"), "-q")

    th = threading.Thread(target=background)
    th.start()
    try:
        out["ice_mlp"] = build_board(root / "mlp_stream", "icebreaker", out=root / "ice_mlp", baud=TEST_BAUD,
                                     sim_rows=200, bitstream_rows=20, inputs=out["mlp"][2])
        out["tiny"] = _tiny_board_run(root)  # while the child still builds: the two chains take about as long
    finally:
        th.join()
    out["child"] = child
    return out


def _tiny_board_run(root: Path) -> subprocess.CompletedProcess[str]:
    """``kdhw board`` for an iCE40 HX1K (1,280 logic cells; the iCEstick's part and pins), too small for the board
    top, from its own catalog folder."""
    cat = root / "tiny_catalog"
    cat.mkdir()
    pins = "".join(f'  {r}:\n    site: "{s}"\n    source: "icestorm examples/icestick/icestick.pcf (button: any pin)"\n'
                   for r, s in (("clk", "21"), ("uart_rx", "9"), ("uart_tx", "8"), ("button", "44"), ("led0", "99")))
    (cat / "tiny-ice.yaml").write_text(
        "name: tiny-ice\nvendor: lattice\nfamily: ice40\npart: hx1k-tq144\nclock_mhz: 12\nlut: 1280\nff: 1280\n"
        'dsp: 0\nbram36: 0\nuram: 0\nio_pins: 96\nsources: ["test board: an iCE40 HX1K"]\npins:\n' + pins)
    return subprocess.run([sys.executable, "-m", "kdhw.cli", "board", str(root / "mlp_stream"), "--board", "tiny-ice",
                           "--bitstream-rows", "0"], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "KDHW_BOARDS_DIR": str(cat)})


def _board_json(d: Path) -> dict[str, Any]:
    return json.loads((d / "board.json").read_text())


@needs_tools
@pytest.mark.slow
def test_icebreaker_mlp_bitstream_proved_at_the_pins_and_from_the_bitstream(builds: dict[str, Any]) -> None:
    d = builds["root"] / "ice_mlp"
    rep = _board_json(d)
    assert rep == json.loads(json.dumps(builds["ice_mlp"]))  # what build_board returned is what it wrote
    bits = (d / "board.bin").read_bytes()
    assert b"\x7e\xaa\x99\x7e" in bits[:64]  # the iCE40 sync word: a real image
    assert rep["bitstream"] == "board.bin" and rep["bitstream_bytes"] == len(bits)
    assert rep["meets_clock"] and rep["fmax_mhz"] >= 12
    lc = rep["cells"]["ICESTORM_LC"]
    assert 0 < lc["used"] <= lc["available"] == 5280
    # the pins are the catalog's, and the PCF places them there
    pcf = (d / "board.pcf").read_text()
    for port, site in (("clk", "35"), ("uart_rx", "6"), ("uart_tx", "9"), ("button", "10"), ("led[0]", "37"),
                       ("led[1]", "11")):
        assert any(line.split()[-2:] == [port, site] for line in pcf.splitlines() if line.startswith("set_io")), port
    assert "set_frequency clk 12" in pcf
    assert rep["pins"]["uart_rx"]["site"] == "6" and "icebreaker.pcf" in rep["pins"]["uart_rx"]["source"]
    # board-level RTL simulation: 200 frames back to back, bit-exact, and the protocol script
    sim = rep["sim"]
    assert sim["rows"] == 200 and sim["exact_rows"] == 200
    assert sim["protocol_ok"]
    statuses = [r["status"] for r in sim["protocol"]["replies"]]
    # a flipped payload bit and a wrong CRC: BAD_CHECK; wrong LEN; cut off; then exact frames (resync, reset)
    assert statuses == ["BAD_CHECK", "BAD_CHECK", "BAD_LEN", "TIMEOUT", "OK", "OK", "OK", "OK"]
    assert sim["protocol"]["no_reply_to_reset_frame"]
    assert all(r["exact"] for r in sim["protocol"]["replies"] if r["status"] == "OK")
    assert sim["leds"] == {"error_dark_in_clean_traffic": True, "heartbeat_blinks": True, "error_lit_after_nak": True}
    # the netlist decoded from board.bin, with the bitstream's own parameters
    bs = rep["bitstream_sim"]
    assert bs["design"] == "bitstream netlist" and bs["rows"] == 20 and bs["exact_rows"] == 20 and bs["protocol_ok"]
    assert bs["clks_per_bit"] == 12 == rep["clks_per_bit"]
    # the link-limited rate: one request and one reply, 10 bits a byte
    assert rep["frames_per_s"] == pytest.approx(TEST_BAUD / (10 * (rep["request_bytes"] + rep["reply_bytes"])), rel=1e-3)
    md = (d / "board.md").read_text()
    assert "iceprog board.bin" in md and "200/200" in md and "20/20" in md


@needs_tools
@pytest.mark.slow
def test_icebreaker_conv1d_and_ulx3s_mlp_bitstreams(builds: dict[str, Any]) -> None:
    c = builds["child"]["conv1d"]
    assert c.returncode == 0, c.stderr
    rep = _board_json(builds["root"] / "ice_conv1d")
    assert rep["meets_clock"] and rep["fmax_mhz"] >= 12 and rep["cells"]["ICESTORM_LC"]["used"] <= 5280
    assert rep["sim"]["exact_rows"] == rep["sim"]["rows"] == 12 and rep["sim"]["protocol_ok"]
    assert rep["bitstream_sim"] is None  # --bitstream-rows 0
    u = builds["child"]["ulx"]
    assert u.returncode == 0, u.stderr
    d = builds["root"] / "ulx_mlp"
    rep = _board_json(d)
    assert rep["bitstream"] == "board.bit" and (d / "board.bit").stat().st_size == rep["bitstream_bytes"] > 0
    assert rep["meets_clock"] and rep["fmax_mhz"] >= 25
    assert rep["sim"]["exact_rows"] == 12 and rep["sim"]["protocol_ok"]
    # all eight LEDs: heartbeat, error, frame and reset LEDs each did what they should
    assert rep["sim"]["leds"] == {"error_dark_in_clean_traffic": True, "heartbeat_blinks": True, "frame_led_lit": True,
                                  "error_lit_after_nak": True, "reset_led_lit_while_pressed": True}
    lpf = (d / "board.lpf").read_text()
    for port, site in (("clk", "G2"), ("uart_rx", "M1"), ("uart_tx", "L4"), ("button", "D6"), ("led[0]", "B2"),
                       ("led[7]", "H3")):
        assert f'LOCATE COMP "{port}" SITE "{site}" ;' in lpf
    assert 'FREQUENCY PORT "clk" 25 MHZ ;' in lpf
    assert rep["bitstream_sim"] is None and "ecpunpack" in rep["bitstream_sim_note"]


@needs_tools
@pytest.mark.slow
def test_link_infer_through_a_pty_wired_to_the_simulated_pins(builds: dict[str, Any]) -> None:
    """The driver's bytes cross the simulated UART: pty -> RX pin, TX pin -> pty."""
    import serial

    from kdhw.boards import load_board
    from kdhw.hw.board import Link
    from kdhw.hw.board.link import ReplyParser, encode_request, request_payloads
    from kdhw.verify.board_sim import board_pty
    from kdhw.hw.export import load_qonnx, reference
    from kdhw.hw.rtl import input_codes, load_meta

    d = builds["root"] / "ice_mlp"
    path, _, x = builds["mlp"]
    meta = load_meta(d / "core")
    b = load_board("icebreaker")
    rows = x[:6]
    want = reference(load_qonnx(path), rows)
    with board_pty(d, meta, len(b.leds()), b.pin_map()["button"].active_low, max_wall_s=240) as port:
        # a corrupted request first, by hand: the NAK comes back through the pty
        with serial.Serial(port, 115200, timeout=0.2) as ser:
            frame = bytearray(encode_request(0x42, request_payloads(meta, input_codes(meta, rows[:1]))[0]))
            frame[8] ^= 0x04  # one payload bit
            ser.write(bytes(frame))
            parser, reps = ReplyParser(), []
            for _ in range(300):
                reps += parser.feed(ser.read(64))
                if reps:
                    break
            assert [(r.seq, r.status_name, r.payload) for r in reps] == [(0x42, "BAD_CHECK", b"")]
        with Link(port, d, timeout=30) as link:
            res = link.infer(rows)
            one = link.infer(rows[2])  # a single row, input-shaped
    np.testing.assert_array_equal(res.logits, want)  # bit-exact: same dequantized values
    np.testing.assert_array_equal(res.classes, np.argmax(want, axis=1))
    np.testing.assert_array_equal(one.logits, want[2:3])
    assert link.stats["frames"] == 7 and link.stats["retries"] == 0


@needs_tools
@pytest.mark.slow
def test_a_flipped_output_bit_is_caught(builds: dict[str, Any], tmp_path: Path) -> None:
    """Both ways: a wrong expectation, and hardware that flips a bit of every output beat."""
    from kdhw.flows.board import _sim_failure
    from kdhw.verify.board_sim import simulate_board
    from kdhw.hw.board.top import LED_ROLES
    from kdhw.hw.export import load_qonnx, reference
    from kdhw.hw.rtl import input_codes, load_meta, output_codes

    path, _, x = builds["mlp"]
    src = builds["root"] / "ice_mlp"
    meta = load_meta(src / "core")
    rows = x[:3]
    codes, exp = input_codes(meta, rows), output_codes(meta, reference(load_qonnx(path), rows))
    args = (list(LED_ROLES[:2]), [True, True], True)
    wrong = exp.copy()
    wrong[1, 0] ^= 1
    r = simulate_board(src, meta, codes, wrong, *args, protocol=False)
    assert r["exact_rows"] == 2 and not r["ok"] and r["mismatches"][0]["row"] == 1
    assert "2/3 frames bit-exact" in _sim_failure("board-level simulation", r)
    # a fault in the hardware: the reply sender flips bit 0 of every output beat it takes from the core
    d = tmp_path / "faulty"
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("build"))
    link_v = d / "hdl" / "kdhw_link.v"
    text = link_v.read_text()
    assert text.count("ob <= m_tdata;") == 1
    link_v.write_text(text.replace("ob <= m_tdata;", "ob <= m_tdata ^ 1'b1;"))
    r = simulate_board(d, meta, codes, exp, *args, protocol=False)
    assert r["exact_rows"] == 0 and not r["ok"] and len(r["mismatches"]) == 3


def test_bad_inputs_are_one_line_with_the_documented_exit_code(
        qonnx_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from kdhw.hw.rtl import qonnx_to_rtl

    path, _ = qonnx_models["mlp"]
    par = tmp_path / "par"
    qonnx_to_rtl(path, par)  # parallel form

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["board", *args])
        err = capsys.readouterr().err.strip()
        return code, err

    code, err = run(str(par), "--board", "icebreaker")
    assert code == 2 and len(err.splitlines()) == 1 and "--mode stream" in err and "--mode auto --board B" in err
    assert not (par / "board_icebreaker").exists()
    code, err = run(str(par), "--board", "pynq-z2")
    assert code == 2 and len(err.splitlines()) == 1 and "no open bitstream flow" in err
    code, err = run(str(tmp_path), "--board", "icebreaker")
    assert code == 2 and "neither a run folder" in err
    code, err = run(str(par), "--board", "icebreaker", "--baud", "5000000")
    assert code == 2 and "under 4 clocks per bit" in err
    code, err = run(str(par), "--board", "icebreaker", "--baud", "1600000")
    assert code == 2 and "% off" in err
    # a board without pin data
    cat = tmp_path / "catalog"
    cat.mkdir()
    raw = (ROOT / "boards" / "icebreaker.yaml").read_text()
    (cat / "icebreaker.yaml").write_text(raw[:raw.index("\npins:") + 1])
    monkeypatch.setenv("KDHW_BOARDS_DIR", str(cat))
    code, err = run(str(par), "--board", "icebreaker")
    assert code == 2 and len(err.splitlines()) == 1 and "has no pins" in err


def test_catalog_pins_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kdhw.boards import load_board, load_board_file
    from kdhw.errors import InputError

    monkeypatch.delenv("KDHW_BOARDS_DIR", raising=False)
    ice, ulx = load_board("icebreaker"), load_board("ulx3s-85f")
    assert {p.role: p.site for p in ice.pins} == {"clk": "35", "uart_rx": "6", "uart_tx": "9", "button": "10",
                                                  "led0": "37", "led1": "11"}
    assert [p.site for p in ulx.leds()] == ["B2", "C2", "C1", "D2", "D1", "E2", "E1", "H3"]
    assert ulx.pin_map()["uart_rx"].site == "M1" and ulx.pin_map()["button"].active_low
    assert all(p.source for p in (*ice.pins, *ulx.pins))
    assert hash(ice)  # still a frozen, hashable record
    raw = (ROOT / "boards" / "icebreaker.yaml").read_text()
    bad = {
        "unknown role 'uart_cts'": raw + "  uart_cts:\n    site: \"4\"\n    source: \"x\"\n",
        "already the site of pins.clk": raw.replace('site: "6"', 'site: "35"'),
        "must cite where": re.sub(r'(uart_rx:\n    site: "6"\n    source: )".*"', r'\1""', raw),
        "missing uart_tx": raw.replace("  uart_tx:", "  led2:"),
    }
    for msg, text in bad.items():
        p = tmp_path / "icebreaker.yaml"
        p.write_text(text)
        with pytest.raises(InputError, match=msg):
            load_board_file(p)


def test_link_protocol_host_side() -> None:
    from kdhw.hw.board.link import ReplyParser, crc8, encode_reply, encode_request

    assert crc8(b"123456789") == 0xF4  # CRC-8/SMBUS check value
    req = encode_request(7, b"\x01\x02")
    assert req == bytes([0xA5, 0x5A, 7, 2, 0, 1, 2, crc8(bytes([7, 2, 0, 1, 2]))])
    ok, nak = encode_reply(7, 0, b"\x10\x20"), encode_reply(8, 1)
    p = ReplyParser()
    # garbage before, a reply cut in two, a corrupted reply (dropped, and its SYNC not trusted), then a good one
    corrupt = bytearray(encode_reply(9, 0, b"\x5a\xa5"))
    corrupt[7] ^= 0x01
    got = p.feed(b"\x00\x5a\x13" + ok[:4]) + p.feed(ok[4:] + bytes(corrupt) + nak)
    assert [(r.seq, r.status_name, r.payload) for r in got] == [(7, "OK", b"\x10\x20"), (8, "BAD_CHECK", b"")]
    assert p.dropped >= 1


@needs_tools
@pytest.mark.slow
def test_tiny_board_does_not_fit_exit_1(builds: dict[str, Any]) -> None:
    r = builds["tiny"]
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and "does not fit hx1k-tq144: ICESTORM_LC" in err, err
    assert not (builds["root"] / "mlp_stream" / "board_tiny-ice").exists()  # nothing written
