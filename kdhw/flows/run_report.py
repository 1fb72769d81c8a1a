"""The run report: teacher / scratch / KD accuracy, the chosen student, bit widths, verification, timings.

Under function matching (``kdhw.train.recipe``) it shows three students: plain scratch, ``scratch_aug`` (the same
augmentation and schedule, labels only) and the distilled one, and splits the gain into the recipe's share
(scratch_aug − scratch) and the teacher's own (kd − scratch_aug), with what the teacher-following check
scaled down.

``report.json`` is for regression scripts to diff; ``report.md`` (with a training-curve PNG) is for a
person.  Hardware figures per board come from ``hwreport`` and are linked from here when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdhw.util.atomic import save_figure, write_json, write_text


def training_plot(histories: dict[str, list[dict[str, float]]], teacher_val: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for name, h in histories.items():
        ax.plot([r["epoch"] for r in h], [100 * r["val_acc"] for r in h], label=name)
    if teacher_val is not None:
        ax.axhline(100 * teacher_val, color="k", ls="--", lw=1, label="teacher (float)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Student QAT: " + " vs ".join(histories))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def _budget_note(manifest: dict[str, Any]) -> str:
    """The label budget and transfer set in one phrase: a reader must see that the student had fewer labels."""
    parts = []
    if manifest.get("labels"):
        b = manifest["labels"]
        what = f"{100 * b['fraction']:g} % of the train split" if "fraction" in b else f"{b['per_class']} per class"
        parts.append(f"labels on {b['labelled']} training rows ({what}, seed {b['seed']})")
        parts.append(f"validation cut to the same share: {b['val_labelled']} rows" if "val_labelled" in b
                     else "validation keeps all its labels (selection sees more labels than training)")
    if manifest.get("unlabeled"):
        parts.append(f"{manifest['unlabeled']} unlabelled transfer-set rows read by the distillation term")
    return (" · " + "; ".join(parts)) if parts else ""


ARM_NOTES = {"scratch": "labels only, plain schedule",
             "scratch_aug": "labels only, with the distilled arm's augmentation, mixup and schedule (the control)",
             "kd": "distilled"}


def _teacher_note(t: dict[str, Any]) -> str:
    if not t.get("loaded_from"):
        return f"trained {t.get('epochs')} epochs"
    h = t.get("handed_over") or {}
    what = f" ({h['format']}; outputs read as {h['outputs']})" if h.get("format") else ""
    return f"loaded from {t['loaded_from']}{what}"


def _recipe_lines(arms: dict[str, Any]) -> list[str]:
    """Which recipe, why, what the augmented arms trained with and what the teacher check changed."""
    r = ((arms.get("kd") or {}).get("info") or {}).get("recipe")
    if not r:
        return []
    lines = ["", f"Recipe: **{r['name'].replace('_', ' ')}** ({r['reason']})."]
    if r.get("augmented"):
        a = r["augmented"]
        lines[-1] += (f" The augmented arms trained {a['epochs']} epochs ({a['epochs_factor']:g}x "
                      f"the plain {r['plain_epochs']}) with mixup {a['mixup_alpha']:g}, shift {a['augment_shift']}, "
                      f"scale {a['augment_scale']:g}, noise {a['augment_noise']:g}; distillation at T = "
                      f"{a['temperature']:g}, alpha = {a['alpha']:g}, teacher evaluated on every augmented batch.")
    chk = ((arms.get("kd") or {}).get("info") or {}).get("checkpoint")
    if chk:
        lines.append(f"The distilled arm exports the epoch that agrees best with the teacher on the {chk['rows']} "
                     f"transfer rows ({_pct(chk['agreement'])}) rather than its best on validation "
                     "(`distill.checkpoint: teacher`).")
    for c in r.get("teacher_check") or []:
        if c["augment"] == "all kept":
            lines.append(f"Teacher on the labelled rows: {_pct(c['teacher_acc_clean'])} clean, "
                         f"{_pct(c['teacher_acc'])} with the kept augmentation.")
        elif c["scaled_down"]:
            drop = 100 * (c["teacher_acc_clean"] - c["tried"][0]["teacher_acc"])
            lines.append(f"Augmentation `{c['augment']}` {c['asked']:g} cost the teacher {drop:.1f} points on the "
                         f"labelled rows (more than the 5 allowed): scaled down to {c['kept']:g}.")
        elif c.get("user_set"):
            drop = 100 * (c["teacher_acc_clean"] - c["tried"][0]["teacher_acc"])
            lines.append(f"Augmentation `{c['augment']}` {c['asked']:g} (set in the config, kept) costs the teacher "
                         f"{drop:.1f} points on the labelled rows.")
    if {"scratch", "scratch_aug", "kd"} <= set(arms):
        sc, aug, kd = (arms[k]["test_acc"] for k in ("scratch", "scratch_aug", "kd"))
        lines.append(f"Gain over plain scratch: {100 * (kd - sc):+.2f} points test, of which the augmentation and "
                     f"schedule alone (scratch_aug − scratch) {100 * (aug - sc):+.2f} and **the teacher's share "
                     f"(kd − scratch_aug) {100 * (kd - aug):+.2f}** (one seed; benchmarks/kd_pays.py has multi-seed "
                     "figures).")
    return lines


def _contract_lines(rep: dict[str, Any]) -> list[str]:
    """The data measured against the student's input format (range, clipping, idle bits) and the trained
    student's logits against its output format: what the hardware's ports will see."""
    from kdhw.contract import input_notes, output_note

    ic = rep["data"].get("input_contract")
    if not ic:
        return []
    f = ic["format"]
    lines = ["## Input and output ranges", "",
             f"Input format {{bits: {f['bits']}, int_bits: {f['int_bits']}, signed: {str(f['signed']).lower()}}} "
             f"(`{ic['hls_type']}`, {ic['range'][0]:g} .. {ic['range'][1]:g} in steps of {ic['step']:g})"
             + (f", derived from the training rows (`auto`: {', '.join(ic['auto'])})" if ic.get("auto") else "")
             + f"; at most {100 * ic['allow_clip']:g} % of a split's values may clip.", "",
             "| split | values | min | max | clipped | top integer bits unused | values below the top bit |",
             "|---|---|---|---|---|---|---|"]
    for k, m in ic["splits"].items():
        if m["values"]:
            lines.append(f"| {k} | {m['values']:,} | {m['min']:.4g} | {m['max']:.4g} | {100 * m['clipped_share']:.2f} % | "
                         f"{m['headroom_bits'] if m['headroom_bits'] is not None else '—'} | "
                         f"{100 * m['top_bit_idle_share']:.1f} % |")
    lines += [""] + [f"- Input: {n}." for n in input_notes(ic)]
    if rep.get("output_contract"):
        lines.append(f"- Output: {output_note(rep['output_contract'])}.")
    return lines + [""]


def render_markdown(rep: dict[str, Any]) -> str:
    t, arms, v = rep["teacher"], rep["students"], rep.get("verify") or {}
    lines = [
        f"# kdhw run report — {rep['data']['dataset']}",
        "",
        f"Config: `{rep['config_source']}` · data split seed {rep['data']['seed']} · "
        f"{rep['data']['train']}/{rep['data']['val']}/{rep['data']['test']} train/val/test rows"
        + _budget_note(rep["data"]),
        "",
        "## Accuracy (test split)",
        "",
        "| model | test acc | val acc | params | notes |",
        "|---|---|---|---|---|",
        f"| teacher ({t['arch']}, float) | {_pct(t['test_acc'])} | {_pct(t['val_acc'])} | "
        f"{'—' if t.get('params') is None else t['params']} | {_teacher_note(t)} |",
    ]
    for k, a in arms.items():
        note = ", ".join(x for x in ("**exported**" if k == rep["chosen"]["arm"] else "",
                                     ARM_NOTES.get(k, "") if "scratch_aug" in arms else "") if x)
        info = a.get("info") or {}
        if "teacher_train_acc_augmented" in info and not (info.get("recipe") or {}).get("augmented"):
            note += (f" teacher on augmented training rows {_pct(info['teacher_train_acc_augmented'])} "
                     f"(clean {_pct(info['teacher_train_acc_clean'])})")
        if info.get("init") == "scratch":
            note += " started from the scratch student (QKD schedule)"
        lines.append(f"| student {k} | {_pct(a['test_acc'])} | {_pct(a['val_acc'])} | {a['params']} | {note} |")
    ch = rep["chosen"]
    lines += _recipe_lines(arms)
    lines += [
        "",
        f"Exported: **{ch['arm']}** ({ch['reason']}). Validation difference KD − scratch: "
        f"{ch['val_diff_points']:+.2f} points; test difference {ch['test_diff_points']:+.2f} points. "
        f"{ch['noise_note']}",
        "",
        "![validation accuracy per epoch](training.png)",
        "",
        "## Student (fixed point)",
        "",
        "| layer | params | weight bits | bias bits | act bits |",
        "|---|---|---|---|---|",
    ]
    for row in rep["student"]["layers"]:
        lines.append(f"| {row['layer']} | {row['params']} | {row.get('weight_bits', '')} | "
                     f"{row.get('bias_bits', '')} | {row.get('act_bits', '')} |")
    lines += ["", f"Input type (HLS): `{rep['student']['input_type']}`", ""]
    lines += _contract_lines(rep)
    lines += ["## Verification", ""]
    if v:
        lines.append(f"Bit-exact: **{v['bit_exact']}** on {v['rows']} rows "
                     f"(test split + {rep['verify_random_inputs']} random off-grid inputs).")
        lines.append("")
        lines.append("| level | exact rows / rows |")
        lines.append("|---|---|")
        for name, lv in v["levels"].items():
            if "rows" in lv:
                lines.append(f"| {name} | {lv['exact_rows']} / {lv['rows']} |")
            elif name == "weights":
                lines.append(f"| weights .h vs .txt | {'consistent' if lv['consistent'] else 'DIFFER'} |")
        if v.get("first_divergence"):
            lines.append(f"\nFirst diverging layer: `{v['first_divergence']['layer']}`")
        lines.append(f"\nTop-1 agreement with the float teacher: {_pct(v.get('teacher_agreement'))}")
    lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---|"]
    for k, s in rep["timings_s"].items():
        lines.append(f"| {k} | {s:.1f} |")
    lines += hardware_section(rep)
    return "\n".join(lines) + "\n"


def hardware_section(rep: dict[str, Any]) -> list[str]:
    """The run report's per-board hardware table (form, resources, latency and throughput, pins, fit)."""
    if not rep.get("hardware"):
        return []
    hw = rep["hardware"]
    lines: list[str] = []
    form = f"RTL form: {hw[0].get('mode') or '—'}" + (
        f" ({hw[0]['form']}, chosen by rtl.mode: auto for {hw[0]['fit_board']}: every candidate and why it was "
        f"rejected in {rep['hardware_report']})" if hw[0].get("form") else "") + "."
    lines += ["", "## Hardware (per board)", "", form, "",
              "| board | LUT (open synthesis) | LUT (estimate) | DSP | fmax MHz | latency cycles / ns at board clock | "
              "II cycles / frames/s at board clock / at fmax | pins needed / available | fits |",
              "|---|---|---|---|---|---|---|---|---|"]
    for h in hw:
        fm = "—" if h["fmax_mhz"] is None else f"{h['fmax_mhz']:.1f}"
        ns = h.get("latency_ns_at_board_clock")
        fps = [h.get(k) for k in ("frames_per_s_at_board_clock", "frames_per_s_at_fmax")]
        lines.append(f"| {h['board']} | {h['lut'] if h['lut'] is not None else '—'} | {h['lut_estimate']} | "
                     f"{h.get('dsp') if h.get('dsp') is not None else '—'} | {fm} | "
                     f"{h['latency_cycles']} / {'—' if ns is None else f'{ns:,.1f}'} | "
                     f"{h.get('initiation_interval', '—')} / "
                     + " / ".join("—" if v is None else f"{v:,.0f}" for v in fps)
                     + f" | {h.get('pins_needed', '—')} / {h.get('pins', '—')} | {'yes' if h['fits'] else 'no'} |")
    lines += ["", f"Details, utilization charts and the I/O budget: [{rep['hardware_report']}]"
              f"({rep['hardware_report']}) (also hw_report.html)."]
    return lines


def write_report(out_dir: Path, rep: dict[str, Any]) -> None:
    write_json(out_dir / "report.json", rep)
    write_text(out_dir / "report.md", render_markdown(rep))
