"""``kdhw sweep``: one config, one parameter swept over a list of values, paired scratch/KD arms per value.

The teacher is trained (or loaded) once and shared by every value, and so are ensemble members; a scratch
arm is retrained only when the swept value changes something it depends on (student bits, epochs, seed,
mixup, warm-up), because a temperature or method sweep leaves it identical.  Every value's config is
validated before any training, so a bad value costs nothing.  Outputs (written atomically into --out):
``sweep.json`` (every arm, every seed), ``sweep.md`` (the table) and ``sweep.png`` (accuracy vs value).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from .config import SCHEMA, Config, validate
from .errors import InputError

STUDENT_KEYS = ("weight_bits", "act_bits", "bias_bits")
_NOT_SWEPT = ("teachers", "select")
# distill keys a scratch arm depends on: anything else can change without retraining it
_SCRATCH_KEYS = ("epochs", "lr", "batch_size", "seed", "mixup_alpha", "float_warmup_epochs")


def sweepable() -> list[str]:
    return [f"distill.{k}" for k in SCHEMA["distill"] if k not in _NOT_SWEPT] + [f"student.{k}" for k in STUDENT_KEYS]


def parse_values(param: str, text: str) -> list[Any]:
    """Comma-separated values converted to the key's type (``--values 1,2,4``)."""
    if param not in sweepable():
        raise InputError(f"--param {param!r} cannot be swept; choose one of: {', '.join(sweepable())}")
    section, key = param.split(".", 1)
    typ = SCHEMA[section][key][0]
    raw = [v.strip() for v in text.split(",") if v.strip()]
    if not raw:
        raise InputError("--values is empty; give a comma-separated list such as 1,2,4")
    out: list[Any] = []
    for v in raw:
        try:
            if typ is int:
                out.append(int(v))
            elif isinstance(typ, tuple) and float in typ:
                f = float(v)
                out.append(int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f)
            elif typ is object:
                out.append(int(v) if v.lstrip("-").isdigit() else v)
            else:
                out.append(v)
        except ValueError:
            kind = "an integer" if typ is int else "a number"
            raise InputError(f"--values: {v!r} is not {kind} (for {param})") from None
    if len(set(map(str, out))) != len(out):
        raise InputError(f"--values: {text!r} repeats a value")
    return out


def config_with(cfg: Config, param: str, value: Any) -> Config:
    """The config with ``param`` set to ``value``, validated like a file (range errors name the value)."""
    raw = cfg.to_dict()
    section, key = param.split(".", 1)
    raw[section][key] = value
    return validate(raw, f"{cfg.source} [{param}={value}]")


def _scratch_key(spec: dict[str, Any], dcfg: dict[str, Any]) -> str:
    return json.dumps([spec, {k: dcfg[k] for k in _SCRATCH_KEYS}], sort_keys=True, default=str)


def _stats(v: list[float]) -> tuple[float, float]:
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def run_sweep(cfg: Config, param: str, values: list[Any], out: str | Path, *, seeds: int = 1,
              teacher_path: str | None = None, progress: bool = False, log: Any = print) -> dict[str, Any]:
    """Train scratch + KD arms for each value (and seed); write the table and plot into ``out``."""
    from .atomic import atomic_dir, write_json, write_text
    from .data import load_dataset
    from .distill import check_distill, distill, ensemble_members, student_input
    from .student import build_student
    from .teacher import load_teacher, teacher_accuracy, teacher_logits, train_teacher

    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    data = load_dataset(cfg.data, cfg.source)
    cfgs = [config_with(cfg, param, v) for v in values]
    for c in cfgs:  # fail fast: every value's student and student-side method settings
        build_student(c.student, student_input(data.x_val[:1], c.student).shape[1:], data.n_classes, c.source)
        check_distill(c.student, c.distill, data, c.source, teacher_known=False)

    tpath = teacher_path or cfg.teacher["path"]
    if tpath:
        tmodel, saved = load_teacher(tpath)
        tcfg = {**cfg.teacher, **saved, "path": tpath}
    else:
        tmodel, _ = train_teacher(cfg.teacher, data, progress)
        tcfg = dict(cfg.teacher)
    tl = teacher_logits(tmodel, tcfg["arch"], data)
    tacc = teacher_accuracy(tl, data)
    log(f"[teacher] {tcfg['arch']}: test {100 * tacc['test']:.2f} % (shared by every value)")

    scratch_cache: dict[str, Any] = {}
    ensembles: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for v, c in zip(values, cfgs):
        for s in range(seeds):
            dcfg = {**c.distill, "seed": int(c.distill["seed"]) + s}
            extras = None
            if dcfg["method"] == "ensemble":
                ekey = json.dumps([dcfg["teachers"], dcfg["ensemble_size"]])
                if ekey not in ensembles:
                    ensembles[ekey] = ensemble_members(dcfg, data, tcfg, progress, c.source)
                extras = ensembles[ekey]
            skey = _scratch_key(c.student, dcfg)
            arms = distill(c.student, dcfg, data, tl["train"], progress, c.source, teacher=tmodel, teacher_cfg=tcfg,
                           extra_teachers=extras, scratch=scratch_cache.get(skey))
            scratch_cache[skey] = arms["scratch"]
            kd = arms.get("kd")
            row = {"value": v, "seed": dcfg["seed"], "method": dcfg["method"],
                   "scratch_test": arms["scratch"].test_acc, "scratch_val": arms["scratch"].fit.best_val_acc,
                   "kd_test": None if kd is None else kd.test_acc,
                   "kd_val": None if kd is None else kd.fit.best_val_acc,
                   "scratch_s_per_epoch": arms["scratch"].fit.seconds_per_epoch,
                   "kd_s_per_epoch": None if kd is None else kd.fit.seconds_per_epoch}
            rows.append(row)
            log(f"[sweep] {param}={v} seed {dcfg['seed']}: scratch {100 * row['scratch_test']:.2f} %"
                + ("" if kd is None else f", {dcfg['method']} {100 * row['kd_test']:.2f} %"))

    table = _aggregate(values, rows, tacc["test"])
    result = {"param": param, "values": values, "seeds": seeds, "config_source": cfg.source,
              "teacher": {"arch": tcfg["arch"], "test_acc": tacc["test"], "val_acc": tacc["val"]},
              "data": data.manifest, "table": table, "runs": rows}
    out = Path(out)
    with atomic_dir(out) as d:
        write_json(d / "sweep.json", result)
        write_text(d / "sweep.md", sweep_markdown(result))
        sweep_plot(result, d / "sweep.png")
    return result


def _aggregate(values: list[Any], rows: list[dict[str, Any]], teacher_test: float) -> list[dict[str, Any]]:
    table = []
    for v in values:
        rs = [r for r in rows if r["value"] == v]
        sm, ss = _stats([r["scratch_test"] for r in rs])
        entry: dict[str, Any] = {"value": v, "method": rs[0]["method"], "n": len(rs), "scratch_test_mean": sm,
                                 "scratch_test_std": ss, "kd_test_mean": None, "kd_test_std": None,
                                 "diff_mean": None, "gap_closed": None, "epoch_time_ratio": None}
        if all(r["kd_test"] is not None for r in rs):
            km, ks = _stats([r["kd_test"] for r in rs])
            entry.update(kd_test_mean=km, kd_test_std=ks,
                         diff_mean=statistics.mean(r["kd_test"] - r["scratch_test"] for r in rs),
                         kd_val_mean=statistics.mean(r["kd_val"] for r in rs),
                         gap_closed=(km - sm) / (teacher_test - sm) if teacher_test - sm > 1e-9 else None,
                         epoch_time_ratio=statistics.mean(r["kd_s_per_epoch"] / r["scratch_s_per_epoch"] for r in rs))
        table.append(entry)
    return table


def _pct(m: float | None, s: float | None = None) -> str:
    if m is None:
        return "—"
    return f"{100 * m:.2f}" + ("" if s is None else f" ± {100 * s:.2f}")


def sweep_markdown(res: dict[str, Any]) -> str:
    lines = [f"# Sweep of `{res['param']}` ({res['seeds']} seed{'s' if res['seeds'] > 1 else ''} per value)", "",
             f"Teacher ({res['teacher']['arch']}): {100 * res['teacher']['test_acc']:.2f} % test accuracy; "
             f"data {res['data']['dataset']}, {res['data']['train']} training rows.  KD − scratch is paired "
             "(same seed, init and batch order); gap closed = (KD − scratch) / (teacher − scratch).", "",
             "| value | method | scratch test % | KD test % | KD − scratch (points) | gap closed | KD/scratch epoch time |",
             "|---|---|---|---|---|---|---|"]
    for e in res["table"]:
        diff = "—" if e["diff_mean"] is None else f"{100 * e['diff_mean']:+.2f}"
        gap = "—" if e["gap_closed"] is None else f"{100 * e['gap_closed']:+.0f} %"
        ratio = "—" if e["epoch_time_ratio"] is None else f"{e['epoch_time_ratio']:.2f}"
        lines.append(f"| {e['value']} | {e['method']} | {_pct(e['scratch_test_mean'], e['scratch_test_std'])} | "
                     f"{_pct(e['kd_test_mean'], e['kd_test_std'])} | {diff} | {gap} | {ratio} |")
    return "\n".join(lines) + "\n"


def sweep_plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tab = res["table"]
    vals = [e["value"] for e in tab]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
    xs = [float(v) for v in vals] if numeric else list(range(len(vals)))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.errorbar(xs, [100 * e["scratch_test_mean"] for e in tab], yerr=[100 * e["scratch_test_std"] for e in tab],
                marker="o", capsize=3, label="scratch (labels only)")
    kd = [(x, e) for x, e in zip(xs, tab) if e["kd_test_mean"] is not None]
    if kd:
        ax.errorbar([x for x, _ in kd], [100 * e["kd_test_mean"] for _, e in kd],
                    yerr=[100 * e["kd_test_std"] for _, e in kd], marker="s", capsize=3, label="distilled")
    ax.axhline(100 * res["teacher"]["test_acc"], color="k", ls="--", lw=1, label="teacher (float)")
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    if not numeric:
        ax.set_xticks(xs, [str(v) for v in vals], rotation=30, ha="right")
    ax.set_xlabel(res["param"])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Sweep of {res['param']} (mean ± std over {res['seeds']} seed{'s' if res['seeds'] > 1 else ''})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


# ---------------------------------------------------------------- CLI (hooked into kdhw/cli.py by the lead)

def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("sweep", help="train scratch + KD arms over values of one parameter; table + plot")
    s.add_argument("config")
    s.add_argument("--param", required=True, help="e.g. distill.temperature, distill.alpha, distill.method, "
                                                  "student.weight_bits")
    s.add_argument("--values", required=True, help="comma-separated, e.g. 1,2,4")
    s.add_argument("--out", required=True)
    s.add_argument("--seeds", type=int, default=1, help="seeds per value (distill.seed, +1, ...); default 1")
    s.add_argument("--teacher", help="teacher.pt to share (else the config's teacher is trained once)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_sweep)
    return s


def cmd_sweep(a: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(a.config)
    values = parse_values(a.param, a.values)
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a directory")
    res = run_sweep(cfg, a.param, values, out, seeds=a.seeds, teacher_path=a.teacher, progress=not a.no_progress)
    print(sweep_markdown(res), end="")
    print(f"wrote {out}/ (sweep.json, sweep.md, sweep.png)")
    return 0


__all__ = ["add_sweep_parser", "cmd_sweep", "config_with", "parse_values", "run_sweep", "sweepable"]
