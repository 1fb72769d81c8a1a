"""``kdhw sweep``: one config, one parameter swept over a list of values, paired scratch/KD arms per value.

The teacher is trained (or loaded) once and shared by every value, and so are ensemble members; a scratch
arm is trained once per seed unless the swept value changes something it depends on (student bits,
epochs, seed, mixup, warm-up), because a temperature or method sweep leaves it identical.  Where the
recipe is function matching (a transfer set and a runnable teacher), its control arm (scratch_aug) is
planned the same way, once per seed and per setting it depends on.  Every value's
config is validated before any training, so a bad value costs nothing.

Each arm is an independent task on ``kdhw.flows.grid`` (sequential, or on Ray with ``--workers``/``--address``):
pairing survives the split because training is fully seeded, so the scratch arm a KD arm is compared with
is the one it would have had in the same process.  Finished arms are appended to ``runs.jsonl`` in --out
(their checkpoints to ``arms/``), so rerunning an interrupted command resumes it.  Task keys carry a hash
of everything that defines the arm (student, distill settings, data, teacher logits): a changed config
never reuses an old line.  Final outputs, each written atomically: ``sweep.json`` (every arm, every seed),
``sweep.md`` (the table) and ``sweep.png`` (accuracy vs value).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from kdhw.config import SCHEMA, Config, validate
from kdhw.errors import InputError
from kdhw.util.atomic import save_figure
from kdhw.util.runtime import in_torch_threads

from .grid import task_digest as _digest  # the sweep's task keys

STUDENT_KEYS = ("weight_bits", "act_bits", "bias_bits")
_NOT_SWEPT = ("teachers", "select")
# distill keys a scratch arm depends on: anything else can change without retraining it
_SCRATCH_KEYS = ("epochs", "lr", "batch_size", "seed", "mixup_alpha", "float_warmup_epochs", "augment_shift",
                 "augment_scale", "augment_noise")
# ... and function matching's control (scratch_aug), whose augmentation and schedule the recipe sets
_AUG_KEYS = (*_SCRATCH_KEYS, "recipe", "epochs_factor")
# label budgets: each value is its own labelled subset of the same train split, the rest its transfer set
BUDGET_KEYS = {"data.labels.fraction": float, "data.labels.per_class": int}
RUNS_FILE = "runs.jsonl"  # one line per finished arm: what a rerun of the same sweep skips
ARMS_DIR = "arms"  # every trained arm as a student checkpoint (``kdhw export`` reads it)


def sweepable() -> list[str]:
    return ([f"distill.{k}" for k in SCHEMA["distill"] if k not in _NOT_SWEPT] + [f"student.{k}" for k in STUDENT_KEYS]
            + list(BUDGET_KEYS))


def parse_values(param: str, text: str) -> list[Any]:
    """Comma-separated values converted to the key's type (``--values 1,2,4``)."""
    if param not in sweepable():
        raise InputError(f"--param {param!r} cannot be swept; choose one of: {', '.join(sweepable())}")
    section, key = param.split(".", 1)
    typ = BUDGET_KEYS[param] if param in BUDGET_KEYS else SCHEMA[section][key][0]
    if typ is float:
        typ = (int, float)
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
    if param in BUDGET_KEYS:
        seed = (raw["data"].get("labels") or {}).get("seed")
        raw["data"]["labels"] = {key.split(".")[1]: value, **({} if seed is None else {"seed": seed})}
    else:
        raw[section][key] = value
    return validate(raw, f"{cfg.source} [{param}={value}]")


def _scratch_key(spec: dict[str, Any], dcfg: dict[str, Any], keys: tuple[str, ...] = _SCRATCH_KEYS) -> str:
    return json.dumps([spec, {k: dcfg[k] for k in keys}], sort_keys=True, default=str)


def _stats(v: list[float]) -> tuple[float, float]:
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def _safe(v: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(v))


# ---------------------------------------------------------------- what runs inside one task

def _train_arms(task: dict[str, Any], shared: dict[str, Any], scratch: Any = None,
                scratch_aug: Any = None) -> dict[str, Any]:
    """Every arm of every task is trained here, so new keyword arguments (label budgets, transfer sets) need
    adding in one place: ``distill()``, or for function matching's control alone the arm its recipe plans."""
    from kdhw.train.distill import distill, train_arm
    from kdhw.train.recipe import resolve

    extras = shared["ensembles"].get(task["ensemble"]) if task.get("ensemble") else None
    data, t_train, t_unlab = _task_data(task, shared)
    if task["kind"] == "scratch_aug":
        cfg, _ = resolve(task["dcfg"], data, shared["teacher"], src=task["source"]).arms("none")["scratch_aug"]
        return {"scratch_aug": train_arm("scratch_aug", task["spec"], cfg, data, None, "none", False, task["source"])}
    return distill(task["spec"], task["dcfg"], data, t_train, False, task["source"],
                   teacher=shared["teacher"], teacher_cfg=shared["teacher_cfg"], extra_teachers=extras,
                   scratch=scratch, teacher_unlab=t_unlab, scratch_aug=scratch_aug)


def _task_data(task: dict[str, Any], shared: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The task's data and cached teacher logits.  Under a budget sweep the shared data set is the whole
    labelled train split and each task keeps labels on its own subset; the teacher's logits, computed once on
    every row of the split, are indexed rather than recomputed."""
    import dataclasses

    import numpy as np

    from kdhw.train.data import apply_label_budget

    data, t_train, t_unlab = shared["data"], shared["teacher_train"], shared.get("teacher_unlab")
    if not task.get("budget"):
        return data, t_train, t_unlab
    d = apply_label_budget(dataclasses.replace(data, manifest=dict(data.manifest)), task["budget"],
                           int(data.manifest["seed"]), task["source"])
    parts = ([] if t_unlab is None else [t_unlab]) + [t_train[d.dropped_index]]
    return d, t_train[d.train_index], np.concatenate(parts)


def _student_bytes(arm: Any, spec: dict[str, Any], data: Any) -> bytes:
    """The arm as a ``kdhw export``-able checkpoint, as bytes: tasks may run on machines that do not share
    this one's disk, so the driver writes the file."""
    import tempfile

    from kdhw.train.distill import student_input
    from kdhw.train.student import save_student

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.pt"
        save_student(arm.model, spec, student_input(data.x_test[:1], spec).shape[1:], p)
        return p.read_bytes()


def _scratch_arm(blob: bytes, rec: dict[str, Any]) -> Any:
    """A finished scratch arm rebuilt from its checkpoint and record (born-again's generation 0 needs the
    network; the other methods only carry it along)."""
    import io

    from kdhw.train.distill import Arm
    from kdhw.train.loop import FitResult
    from kdhw.train.student import load_student

    fit = FitResult(rec["val_acc"], rec["best_epoch"], rec["epochs_run"], [], rec["s_per_epoch"],
                    rec["cpu_s_per_epoch"], rec.get("val_loss"))
    return Arm("scratch", load_student(io.BytesIO(blob)), fit, rec["test_acc"])


def _arm_task(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """One grid task: a scratch arm (one recipe, one seed), function matching's control (scratch_aug) or a
    distilled arm (one value, one seed)."""
    from kdhw.train.student import param_count

    kind = task["kind"]
    scratch = _scratch_arm(task["scratch_pt"], task["scratch_rec"]) if kind == "kd" else None
    aug = _scratch_arm(task["scratch_aug_pt"], task["scratch_aug_rec"]) if task.get("scratch_aug_pt") else None
    arm = _train_arms(task, shared, scratch, aug)[kind]
    spec = task["spec"]
    if spec.get("resource") is not None:  # learned precisions: a brevitas student with the arm's own spec
        import numpy as np

        from kdhw.train.distill import student_input
        from kdhw.train.resource import fold_arms

        d = shared["data"]
        folded, specs = fold_arms({kind: arm}, student_input(np.concatenate([d.x_val, d.x_test]), spec))
        arm, spec = folded[kind], specs[kind]
    return {"kind": kind, "value": task.get("value"), "seed": task["dcfg"]["seed"], "method": task["dcfg"]["method"],
            "test_acc": arm.test_acc, "val_acc": arm.fit.best_val_acc, "val_loss": arm.fit.best_val_loss,
            "best_epoch": arm.fit.best_epoch,
            "epochs_run": arm.fit.epochs_run, "s_per_epoch": arm.fit.seconds_per_epoch,
            "cpu_s_per_epoch": arm.fit.cpu_seconds_per_epoch, "params": param_count(arm.model),
            "info": json.loads(json.dumps(arm.info, default=float)),
            "student_pt": _student_bytes(arm, spec, shared["data"])}


# ---------------------------------------------------------------- the sweep

@in_torch_threads
def run_sweep(cfg: Config, param: str, values: list[Any], out: str | Path, *, seeds: int = 1,
              teacher_path: str | None = None, progress: bool = False, log: Any = print,
              workers: int | None = 1, address: str | None = None) -> dict[str, Any]:
    """Train scratch + KD arms for each value (and seed) as grid tasks; write the table and plot into ``out``.

    Tasks run in two batches: the distinct scratch arms first, then every distilled arm, each paired with
    its recipe's scratch arm (born-again starts from it).  ``workers``/``address``: see ``kdhw.flows.grid``.
    """
    from kdhw.train.data import load_data
    from kdhw.train.distill import check_distill, student_input
    from kdhw.train.student import build_student

    from .grid import check_address, jsonl_lock

    t_start = time.perf_counter()
    if seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {seeds}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a directory")
    budget_sweep = param in BUDGET_KEYS
    # a budget sweep shares the whole labelled split (and a teacher trained on it: the handed-over case)
    data = load_data(cfg, {**cfg.data, "labels": None} if budget_sweep else None)  # + the input contract
    cfgs = [config_with(cfg, param, v) for v in values]
    for c in cfgs:  # fail fast: every value's student and student-side method settings
        build_student(c.student, student_input(data.x_val[:1], c.student).shape[1:], data.n_classes, c.source)
        check_distill(c.student, c.distill, data, c.source, teacher_known=False)
    check_address(address)
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    out.mkdir(parents=True, exist_ok=True)
    with jsonl_lock(out / RUNS_FILE):  # the whole sweep: teacher file, arms, tables (see grid.jsonl_lock)
        return _run_sweep_locked(cfg, param, values, out, seeds, teacher_path, progress, log, workers, address,
                                 data, cfgs, budget_sweep, t_start)


def _plan_arms(param: str, values: list[Any], cfgs: list[Config], seeds: int, budget_sweep: bool,
               scratch_label: bool, fp: str, plan_shared: dict[str, Any], tmodel: Any,
               ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[tuple[Any, int, str, str | None, str | None]]]:
    """The sweep's tasks: distinct scratch arms (function matching's control too, keyed by what they train, so
    values that do not change them share one), then one distilled arm per (value, seed); and per cell the
    keys of its (value, seed, scratch, kd, scratch_aug) arms."""
    from kdhw.train.recipe import matches_function

    scratch_tasks: dict[str, dict[str, Any]] = {}
    kd_tasks: list[dict[str, Any]] = []
    cells: list[tuple[Any, int, str, str | None, str | None]] = []  # (value, seed, scratch, kd, scratch_aug key)
    for v, c in zip(values, cfgs):
        for s in range(seeds):
            dcfg = {**c.distill, "seed": int(c.distill["seed"]) + s}
            # each seed of a budget sweep draws its own labelled subset (labels.seed, default data.seed, + s)
            budget = ({**c.data["labels"], "seed": int(c.data["labels"].get("seed") or c.data["seed"]) + s}
                      if budget_sweep else None)
            skey_content = [_scratch_key(c.student, dcfg), budget]
            skey = (f"scratch {param}={v} " if scratch_label else "scratch ") + \
                f"seed={dcfg['seed']} #{_digest(skey_content, fp)}"
            scratch_tasks.setdefault(skey, {"key": skey, "kind": "scratch", "spec": c.student, "budget": budget,
                                            "dcfg": {**dcfg, "method": "none"}, "source": c.source,
                                            "file": f"scratch_s{dcfg['seed']}_{skey[-10:]}.pt"})
            kkey = akey = None
            if dcfg["method"] != "none" and matches_function(
                    dcfg, _task_data({"budget": budget, "source": c.source}, plan_shared)[0], tmodel):
                akey = (f"scratch_aug {param}={v} " if scratch_label else "scratch_aug ") + \
                    f"seed={dcfg['seed']} #{_digest([_scratch_key(c.student, dcfg, _AUG_KEYS), budget], fp)}"
                scratch_tasks.setdefault(akey, {"key": akey, "kind": "scratch_aug", "spec": c.student, "budget": budget,
                                                "dcfg": dcfg, "source": c.source,
                                                "file": f"scratch_aug_s{dcfg['seed']}_{akey[-10:]}.pt"})
            if dcfg["method"] != "none":
                files = [_file_digest(p) for p in dcfg["teachers"] or []] if dcfg["method"] == "ensemble" else []
                kkey = (f"{dcfg['method']} {param}={v} seed={dcfg['seed']} "
                        f"#{_digest(c.student, dcfg, fp, files, budget)}")
                ens = json.dumps([dcfg["teachers"], dcfg["ensemble_size"]]) if dcfg["method"] == "ensemble" else None
                kd_tasks.append({"key": kkey, "kind": "kd", "value": v, "spec": c.student, "dcfg": dcfg, "budget": budget,
                                 "source": c.source, "ensemble": ens, "scratch_key": skey, "scratch_aug_key": akey,
                                 "file": f"kd_{_safe(v)}_s{dcfg['seed']}_{kkey[-10:]}.pt"})
            cells.append((v, dcfg["seed"], skey, kkey, akey))

    return scratch_tasks, kd_tasks, cells


def _row(cell: tuple[Any, int, str, str | None, str | None], scratch_res: dict[str, Any],
         kd_res: dict[str, Any]) -> dict[str, Any]:
    """One (value, seed) cell of sweep.json's runs: its scratch, augmented-scratch and distilled arms."""
    v, seed, skey, kkey, akey = cell
    sc, kd, aug = scratch_res[skey], (kd_res[kkey] if kkey else None), (scratch_res[akey] if akey else None)
    return {"value": v, "seed": seed, "method": kd["method"] if kd else "none",
            "recipe": ((kd["info"] or {}).get("recipe") or {}).get("name") if kd else None,
            "scratch_aug_test": None if aug is None else aug["test_acc"],
            "scratch_aug_val": None if aug is None else aug["val_acc"],
            "scratch_aug_arm": None if aug is None else aug["arm"],
            "scratch_test": sc["test_acc"], "scratch_val": sc["val_acc"],
            "kd_test": None if kd is None else kd["test_acc"], "kd_val": None if kd is None else kd["val_acc"],
            "scratch_s_per_epoch": sc["s_per_epoch"],
            "kd_s_per_epoch": None if kd is None else kd["s_per_epoch"],
            "scratch_cpu_s_per_epoch": sc["cpu_s_per_epoch"],
            "kd_cpu_s_per_epoch": None if kd is None else kd["cpu_s_per_epoch"],
            "params": sc["params"], "scratch_arm": sc["arm"], "kd_arm": None if kd is None else kd["arm"],
            "kd_info": None if kd is None else kd["info"], "scratch_key": skey, "kd_key": kkey}


def _run_sweep_locked(cfg: Config, param: str, values: list[Any], out: Path, seeds: int, teacher_path: str | None,
                      progress: bool, log: Any, workers: int | None, address: str | None, data: Any,
                      cfgs: list[Config], budget_sweep: bool, t_start: float) -> dict[str, Any]:
    from kdhw.train.distill import ensemble_members
    from kdhw.train.teacher import shared_teacher, teacher_accuracy, teacher_logits
    from kdhw.util.atomic import write_json, write_text

    from .grid import Grid, load_done

    tmodel, tcfg, how = shared_teacher(cfg, data, out, teacher_path, progress)
    tl = teacher_logits(tmodel, tcfg["arch"], data)
    tacc = teacher_accuracy(tl, data)
    log(f"[teacher] {tcfg['arch']}: test {100 * tacc['test']:.2f} % ({how}; shared by every value)")
    fp = _digest(data.manifest["sha256_16"], tl["train"].tobytes(), tl["val"].tobytes(),
                 tl["unlab"].tobytes() if "unlab" in tl else b"")

    scratch_label = param.startswith(("student.", "data.")) or param.split(".", 1)[1] in _AUG_KEYS
    scratch_tasks, kd_tasks, cells = _plan_arms(param, values, cfgs, seeds, budget_sweep, scratch_label, fp,
                                                {"data": data, "teacher_train": tl["train"],
                                                 "teacher_unlab": tl.get("unlab")}, tmodel)

    jsonl = out / RUNS_FILE
    done = load_done(jsonl)
    ensembles: dict[str, Any] = {}
    for t in kd_tasks:  # extra ensemble teachers: trained once here, only if a pending task needs them
        if t["ensemble"] and t["key"] not in done and t["ensemble"] not in ensembles:
            ensembles[t["ensemble"]] = ensemble_members(t["dcfg"], data, tcfg, progress, t["source"])
    shared = {"data": data, "teacher_train": tl["train"], "teacher_unlab": tl.get("unlab"), "teacher": tmodel,
              "teacher_cfg": tcfg, "ensembles": ensembles}

    def save_arm(task: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
        from kdhw.util.atomic import write_bytes

        res = dict(res)
        write_bytes(out / ARMS_DIR / task["file"], res.pop("student_pt"))
        res["arm"] = f"{ARMS_DIR}/{task['file']}"
        if task["kind"] in ("scratch", "scratch_aug"):
            log(f"[sweep] {task['kind']} seed {res['seed']}"
                f"{f' ({param}={task_value(task)})' if scratch_label else ''}: {100 * res['test_acc']:.2f} %")
        else:
            sc = scratch_res[task["scratch_key"]]
            log(f"[sweep] {param}={task['value']} seed {res['seed']}: scratch {100 * sc['test_acc']:.2f} %, "
                f"{res['method']} {100 * res['test_acc']:.2f} %")
        return res

    def task_value(task: dict[str, Any]) -> Any:
        return next(v for v, _, sk, _, ak in cells if task["key"] in (sk, ak))

    with Grid(workers, address, progress) as grid:
        scratch_res = dict(zip(scratch_tasks, grid.run(_arm_task, list(scratch_tasks.values()), shared, jsonl,
                                                       desc="scratch arms", on_result=save_arm)))
        for t in kd_tasks:  # distilled arms already recorded before this run (``done``) need no scratch input
            if t["key"] in done:
                continue
            for kind in ("scratch", "scratch_aug"):
                if t.get(f"{kind}_key") is None:
                    continue
                sc = scratch_res[t[f"{kind}_key"]]
                path = out / sc["arm"]
                if not path.is_file():
                    raise InputError(f"{jsonl}: {kind} arm {t[f'{kind}_key']!r} is recorded but {path} is missing; "
                                     f"delete {jsonl.name} (or its line) to retrain it")
                t[f"{kind}_pt"], t[f"{kind}_rec"] = path.read_bytes(), sc
        kd_res = dict(zip([t["key"] for t in kd_tasks],
                          grid.run(_arm_task, kd_tasks, shared, jsonl, desc="distilled arms", on_result=save_arm)))
        stats = grid.stats

    rows = [_row(cell, scratch_res, kd_res) for cell in cells]

    table = _aggregate(values, rows, tacc["test"])
    result = {"param": param, "values": values, "seeds": seeds, "config_source": cfg.source,
              "teacher": {"arch": tcfg["arch"], "test_acc": tacc["test"], "val_acc": tacc["val"]},
              "data": data.manifest, "table": table, "runs": rows,
              "grid": {"mode": stats.mode, "workers": stats.workers, "address": address,
                       "tasks": len(scratch_tasks) + len(kd_tasks), "executed": stats.executed,
                       "resumed": stats.resumed, "ray_startup_s": stats.ray_startup_s,
                       "wall_s": time.perf_counter() - t_start, "runs_file": RUNS_FILE}}
    write_json(out / "sweep.json", result)
    write_text(out / "sweep.md", sweep_markdown(result))
    sweep_plot(result, out / "sweep.png")
    return result


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


def _aggregate(values: list[Any], rows: list[dict[str, Any]], teacher_test: float) -> list[dict[str, Any]]:
    table = []
    for v in values:
        rs = [r for r in rows if r["value"] == v]
        sm, ss = _stats([r["scratch_test"] for r in rs])
        entry: dict[str, Any] = {"value": v, "method": rs[0]["method"], "n": len(rs), "scratch_test_mean": sm,
                                 "scratch_test_std": ss, "kd_test_mean": None, "kd_test_std": None,
                                 "diff_mean": None, "gap_closed": None, "epoch_time_ratio": None,
                                 "scratch_aug_test_mean": None, "teacher_share_mean": None}
        if all(r["kd_test"] is not None for r in rs):
            km, ks = _stats([r["kd_test"] for r in rs])
            entry.update(kd_test_mean=km, kd_test_std=ks,
                         diff_mean=statistics.mean(r["kd_test"] - r["scratch_test"] for r in rs),
                         kd_val_mean=statistics.mean(r["kd_val"] for r in rs),
                         gap_closed=(km - sm) / (teacher_test - sm) if teacher_test - sm > 1e-9 else None,
                         # process CPU time: parallel tasks on shared cores inflate wall time, not CPU time
                         epoch_time_ratio=statistics.mean(r["kd_cpu_s_per_epoch"] / r["scratch_cpu_s_per_epoch"]
                                                          for r in rs))
            if all(r["scratch_aug_test"] is not None for r in rs):  # function matching: the teacher's own share
                entry.update(scratch_aug_test_mean=statistics.mean(r["scratch_aug_test"] for r in rs),
                             teacher_share_mean=statistics.mean(r["kd_test"] - r["scratch_aug_test"] for r in rs))
        table.append(entry)
    return table


def _pct(m: float | None, s: float | None = None) -> str:
    if m is None:
        return "—"
    return f"{100 * m:.2f}" + ("" if s is None else f" ± {100 * s:.2f}")


def sweep_markdown(res: dict[str, Any]) -> str:
    fm = any(e.get("scratch_aug_test_mean") is not None for e in res["table"])
    lines = [f"# Sweep of `{res['param']}` ({res['seeds']} seed{'s' if res['seeds'] > 1 else ''} per value)", "",
             f"Teacher ({res['teacher']['arch']}): {100 * res['teacher']['test_acc']:.2f} % test accuracy; "
             f"data {res['data']['dataset']}, {res['data']['train']} training rows.  KD − scratch is paired "
             "(same seed, init and batch order); gap closed = (KD − scratch) / (teacher − scratch)."
             + ("  Where the recipe is function matching, scratch_aug is its control (the same augmentation and "
                "schedule, labels only) and KD − scratch_aug the teacher's own share." if fm else ""), "",
             "| value | method | scratch test % | KD test % | KD − scratch (points) | gap closed "
             "| KD/scratch epoch CPU time |" + (" scratch_aug test % | KD − scratch_aug (points) |" if fm else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if fm else "")]
    for e in res["table"]:
        diff = "—" if e["diff_mean"] is None else f"{100 * e['diff_mean']:+.2f}"
        gap = "—" if e["gap_closed"] is None else f"{100 * e['gap_closed']:+.0f} %"
        ratio = "—" if e["epoch_time_ratio"] is None else f"{e['epoch_time_ratio']:.2f}"
        row = (f"| {e['value']} | {e['method']} | {_pct(e['scratch_test_mean'], e['scratch_test_std'])} | "
               f"{_pct(e['kd_test_mean'], e['kd_test_std'])} | {diff} | {gap} | {ratio} |")
        if fm:
            share = e.get("teacher_share_mean")
            row += f" {_pct(e.get('scratch_aug_test_mean'))} | {'—' if share is None else f'{100 * share:+.2f}'} |"
        lines.append(row)
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
    save_figure(fig, path)


# ---------------------------------------------------------------- CLI (hooked into kdhw/cli.py by the lead)

def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("sweep", help="train scratch + KD arms over values of one parameter; table + plot")
    s.add_argument("config", help="YAML config (the base every value is laid over)")
    s.add_argument("--param", required=True, help="e.g. distill.temperature, distill.alpha, distill.method, "
                                                  "student.weight_bits, data.labels.fraction")
    s.add_argument("--values", required=True, help="comma-separated, e.g. 1,2,4")
    s.add_argument("--out", required=True, help="folder; holds runs.jsonl, so rerunning the command resumes")
    s.add_argument("--seeds", type=int, default=1, help="seeds per value (distill.seed, +1, ...); default 1")
    s.add_argument("--teacher", help="teacher.pt to share (else the config's teacher is trained once)")
    s.add_argument("--workers", type=int, default=None,
                   help="tasks run at once on Ray (0 = every core); default 1 = sequential in this process, "
                        "or every CPU of the cluster with --address")
    s.add_argument("--address", help="an existing Ray cluster (HOST:PORT of its head, or auto); kdhw must be "
                                     "installed on its nodes; a head with token auth needs its token here, docs/ray.md")
    s.add_argument("--no-progress", action="store_true", help="no progress bars (the summary lines stay)")
    s.set_defaults(fn=cmd_sweep)
    return s


def cmd_sweep(a: argparse.Namespace) -> int:
    """Sequential by default: on a few cores a sweep of tiny students gains less than Ray's ~10 s start-up
    costs unless it is long, and a shared machine should not be taken over unasked; ``--workers`` opts in."""
    from tqdm import tqdm

    from kdhw.config import load_config

    from .grid import cpu_workers

    cfg = load_config(a.config)
    values = parse_values(a.param, a.values)
    workers = cpu_workers(a.workers)
    if workers is None and a.address is None:
        workers = 1
    out = Path(a.out)
    res = run_sweep(cfg, a.param, values, out, seeds=a.seeds, teacher_path=a.teacher, progress=not a.no_progress,
                    log=tqdm.write, workers=workers, address=a.address)
    print(sweep_markdown(res), end="")
    g = res["grid"]
    print(f"wrote {out}/ (sweep.json, sweep.md, sweep.png, {RUNS_FILE}, {ARMS_DIR}/); {g['executed']} tasks run, "
          f"{g['resumed']} already done, {g['mode']} with {g['workers']} worker{'s' if g['workers'] > 1 else ''}")
    return 0


__all__ = ["add_sweep_parser", "cmd_sweep", "config_with", "parse_values", "run_sweep", "sweepable"]
