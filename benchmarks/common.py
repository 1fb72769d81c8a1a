"""What several benchmarks share: the repository root, the ``kd_pays`` students and their handed-over teachers,
the recipe tasks (shared by ``kd_pays --recipe`` and ``fm_schedule``), statistics, result files and CLI pieces.

Moved here verbatim from ``kd_pays.py`` (``_task_inputs`` is ``task_inputs`` now, ``_conv1d`` / ``_mlp`` are
``conv1d_student`` / ``mlp_student``): task keys, the teacher digest and the ``kd_pays:`` labels in validation
messages are exactly what they were, so the JSONL files of earlier runs still resume.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / ".kdhw-cache"  # benchmarks' resumable work folders (git-ignored)


# ---------------------------------------------------------------- the kd_pays students

_IN8U = {"bits": 8, "int_bits": 1, "signed": False}
_IN8S = {"bits": 8, "int_bits": 1, "signed": True}


def conv1d_student(c1: int, c2: int, wb: int) -> dict[str, Any]:
    return {"input": _IN8S, "weight_bits": wb, "act_bits": 4,
            "layers": [{"type": "conv1d", "filters": c1, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2},
                       {"type": "conv1d", "filters": c2, "kernel": 3}, {"type": "relu"}, {"type": "maxpool", "size": 2},
                       {"type": "dense", "units": 10}]}


def mlp_student(h: int, wb: int) -> dict[str, Any]:
    return {"input": _IN8U, "weight_bits": wb, "act_bits": 4,
            "layers": [{"type": "dense", "units": h}, {"type": "relu"}, {"type": "dense", "units": 10}]}


SETS: dict[str, dict[str, Any]] = {
    "digits": {
        "data": {"dataset": "digits"},
        "teacher": {"arch": "cnn2d", "channels": [16, 32], "hidden": 64, "epochs": 40, "patience": 8},
        "students": {"mlp8_w4": mlp_student(8, 4), "mlp16_w2": mlp_student(16, 2)},
        "epochs": 30,
        # no shifts: a 1-pixel shift of an 8x8 digit changes the teacher's answer on 20-46 % of its own
        # training images (measured), so the online teacher would teach wrong targets
        "augment": {"mixup_alpha": 0.4, "augment_noise": 0.05},
    },
    "mnist1d": {
        # dataset: mnist1d_lookalike, kdhw's synthetic stand-in, on which every committed result of this set was
        # measured (the set key stays "mnist1d", as those results name it); dataset: mnist1d is the real MNIST-1D
        "data": {"dataset": "mnist1d_lookalike", "mnist1d_samples": 3000},
        "teacher": {"arch": "cnn1d", "channels": [32, 64], "kernel": 5, "hidden": 64, "epochs": 60, "patience": 15},
        "students": {"conv4_8_w4": conv1d_student(4, 8, 4), "conv8_16_w4": conv1d_student(8, 16, 4)},
        "epochs": 24,
        "augment": {"mixup_alpha": 0.4, "augment_noise": 0.05, "augment_shift": 2, "augment_scale": 0.1},
    },
}


# ---------------------------------------------------------------- handed-over teachers and task inputs

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def cached_teacher(key: str, teacher_cfg: dict[str, Any], data: Any, log: Any = print) -> dict[str, Any]:
    """A trained teacher's state, logits and accuracy, cached on disk by its config and data (a handed-over
    teacher costs minutes to train and is the same every run, so each benchmark trains it once)."""
    import torch

    from kdhw.train.teacher import teacher_accuracy, teacher_logits, train_teacher

    path = CACHE / "train_speed" / f"teacher_{key}_{_digest([teacher_cfg, len(data.y_train), data.x_train[:3]])}.pt"
    if path.exists():
        try:  # tensors only (no unpickling of arbitrary objects); a cache written otherwise is retrained
            blob = torch.load(path, weights_only=True)
            return {**blob, "logits": {k: v.numpy() for k, v in blob["logits"].items()}}
        except Exception:
            pass
    t0 = time.perf_counter()
    model, _ = train_teacher(teacher_cfg, data, progress=False)
    tl = teacher_logits(model, teacher_cfg["arch"], data)
    blob = {"state": {k: v.clone() for k, v in model.state_dict().items()}, "logits": tl,
            "acc": teacher_accuracy(tl, data), "digest": key}
    log(f"[{key}] teacher trained in {time.perf_counter() - t0:.0f} s: test {100 * blob['acc']['test']:.2f} %")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**blob, "logits": {k: torch.from_numpy(v) for k, v in tl.items()}}, tmp)
    tmp.replace(path)
    return blob


def shared_teachers(sets: list[str], log: Any = print) -> dict[str, Any]:
    """One handed-over teacher per data set, trained on the whole labelled train split, and its logits on
    every row of that split (shared by every task; each task indexes the rows its budget keeps).  Served from
    ``cached_teacher``'s disk cache; the digest in task keys is still the hash of the teacher's logits, so a
    retrained teacher that differs gets new keys."""
    from kdhw.config import validate
    from kdhw.train.data import load_dataset

    out = {}
    for s in sets:
        cfg = validate({"data": SETS[s]["data"], "teacher": SETS[s]["teacher"]}, f"kd_pays:{s}")
        data = load_dataset(cfg.data)
        blob = cached_teacher(s, cfg.teacher, data, log)
        tl = blob["logits"]
        log(f"[{s}] handed-over teacher {cfg.teacher['arch']}: test {100 * blob['acc']['test']:.2f} % "
            f"({len(data.y_train)} labelled training rows)")
        digest = hashlib.sha256(tl["train"].tobytes() + tl["val"].tobytes()).hexdigest()[:8]
        out[s] = {"state": blob["state"], "logits": tl, "acc": blob["acc"], "digest": digest}
    return out


def task_inputs(raw: dict[str, Any], task: dict[str, Any], shared: dict[str, Any]) -> tuple[Any, ...]:
    """A task's validated config, its data (label budget applied), the shared handed-over teacher and that
    teacher's cached logits on the task's labelled and transfer rows."""
    from kdhw.config import validate
    from kdhw.train.data import load_dataset
    from kdhw.train.teacher import build_teacher

    cfg = validate(raw, f"kd_pays:{task['key']}")
    data = load_dataset(cfg.data)
    sh = shared[task["set"]]
    teacher = build_teacher(cfg.teacher, data.shape, data.n_classes)
    teacher.load_state_dict(sh["state"])
    teacher.eval()
    full = sh["logits"]["train"]
    t_train = full if data.train_index is None else full[data.train_index]
    t_unlab = None if data.dropped_index is None else full[data.dropped_index]
    return cfg, data, teacher, t_train, t_unlab



# ---------------------------------------------------------------- the new default: recipe tasks

# Part of every recipe task's key: records without it were trained when ``kdhw.train.loop.fit`` kept the first
# epoch of the best validation accuracy; "/e2" ones break such ties by validation loss; "/e3" ones also train
# with the default ReLU gradient leak (``distill.relu_grad_leak``, benchmarks/relu_leak.py), as kdhw does now.
FIT_TAG = "/e3"
# Added to fm keys only: the distilled arm now exports the epoch that agrees best with the teacher on the
# transfer rows (``distill.checkpoint: teacher``); fm records without it kept the best-validation epoch, and
# stay in the JSONL as the comparison "before" (the other arms read no teacher, so their rule is unchanged).
CHECKPOINT_TAG = "/ckteacher"
RECIPE_ARMS = ("scratch", "scratch_aug", "fm")  # fm = the distilled arm of `distill.recipe: auto`
RECIPE_JSONL = "benchmarks/results/kd_recipe.jsonl"  # shared with fm_schedule.py: identical tasks run once


def recipe_tasks(sets: list[str], seeds: int, students: list[str] | None = None, budgets: tuple[float, ...] = (0.1,),
                 factors: tuple[float, ...] | None = None, vals: tuple[str, ...] = ("full", "cut"),
                 arms: tuple[str, ...] = RECIPE_ARMS, teachers: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Tasks of what ``kdhw run`` now does with a label budget and a handed-over teacher (``distill.recipe:
    auto`` -> function matching): plain scratch, scratch_aug and fm per (student, budget, seed, validation
    variant), at each ``epochs_factor`` (default: the library's).  Keys carry a digest of the teacher's
    logits, so a task is reused (here or by fm_schedule.py) only for the same teacher."""
    from kdhw.train.recipe import FM_BATCH_FACTOR, FM_EPOCHS_FACTOR

    factors = factors or (FM_EPOCHS_FACTOR,)
    # the library's own factor runs the schedule the recipe resolves (FM_BATCH_FACTOR x the batch since
    # fm_schedule.py --batches: "/bN" in the key); any other factor is set as distill.epochs_factor (batch 64)
    own = f"/b{FM_BATCH_FACTOR}" if FM_BATCH_FACTOR != 1 else ""
    tasks = []
    for s in sets:
        tag = (teachers or {}).get(s, {}).get("digest", "")
        for stu in SETS[s]["students"]:
            if students and stu not in students:
                continue
            for b in budgets:
                for val in vals:
                    for seed in range(seeds):
                        for arm in arms:
                            for f in (factors if arm != "scratch" else (None,)):
                                sched = own if f == FM_EPOCHS_FACTOR else ""
                                key = (f"recipe/{s}/{stu}/{b:g}/{seed}/{arm}" + ("" if f is None else f"/x{f:g}")
                                       + sched + ("/val_budget" if val == "cut" else "") + f"/t{tag}{FIT_TAG}"
                                       + (CHECKPOINT_TAG if arm == "fm" else ""))
                                tasks.append({"key": key, "set": s, "student": stu, "budget": b, "seed": seed,
                                              "arm": arm, "factor": f, "val": val, "own_schedule": bool(sched)})
    return list({t["key"]: t for t in tasks}.values())


def run_recipe_task(task: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """One arm of the recipe `kdhw run` resolves for this cell (the same `kdhw.train.recipe.resolve`, including the
    teacher-following check), trained alone; returns accuracies, validation loss and CPU cost."""
    import torch

    from kdhw.train.distill import train_arm
    from kdhw.train.recipe import resolve
    from kdhw.util.runtime import cpu_model

    torch.set_num_threads(1)
    spec_set = SETS[task["set"]]
    dist: dict[str, Any] = {"epochs": spec_set["epochs"], "seed": task["seed"], "method": "hinton"}
    if task["factor"] is not None and not task.get("own_schedule"):
        dist["epochs_factor"] = task["factor"]
    raw: dict[str, Any] = {"data": {**spec_set["data"], "labels": {"fraction": task["budget"], "seed": task["seed"],
                                                                   "val": task["val"] == "cut"}},
                           "teacher": spec_set["teacher"], "student": spec_set["students"][task["student"]],
                           "distill": dist}
    cfg, data, teacher, t_train, t_unlab = task_inputs(raw, task, shared)
    c0, t0 = time.process_time(), time.perf_counter()
    recipe = resolve(cfg.distill, data, teacher, src=f"kd_pays:{task['key']}")
    name = {"fm": "kd"}.get(task["arm"], task["arm"])
    dcfg, method = recipe.arms(cfg.distill["method"])[name]
    a = train_arm(name, cfg.student, dcfg, data, t_train, method, False, teacher=teacher, teacher_unlab=t_unlab)
    out = {k: task[k] for k in ("key", "set", "student", "budget", "seed", "arm", "factor", "val")}
    out.update(recipe=recipe.name, val_acc=a.fit.best_val_acc, val_loss=a.fit.best_val_loss, test=a.test_acc,
               epochs=a.fit.epochs_run, best_epoch=a.fit.best_epoch, cpu_per_epoch=a.fit.cpu_seconds_per_epoch,
               cpu_seconds=time.process_time() - c0, seconds=time.perf_counter() - t0, val_rows=int(len(data.y_val)),
               cpu=cpu_model(),  # float training differs across CPUs: a row says where it was trained
               checkpoint=a.info.get("checkpoint"))
    if name != "scratch":
        out["augmented"] = recipe.describe().get("augmented")
        out["teacher_check"] = [{k: r[k] for k in r if k != "tried"} for r in recipe.teacher_check]
    return out



# ---------------------------------------------------------------- statistics and result files

def bootstrap_ci(diffs: list[float], n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of paired differences, resampling seeds with replacement."""
    d = np.asarray(diffs, dtype=float)
    if len(d) < 2:
        return float(d.mean()), float(d.mean())
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n, len(d)))
    means = d[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def mean_std(v: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0


def write_results(out: Path, md: str, meta: dict[str, Any], table: list[dict[str, Any]],
                  plot_fn: Callable[[list[dict[str, Any]], Path], None]) -> None:
    """A benchmark's three result files, ``out``.md (what the README quotes), .json (meta + table) and .png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "table": table}, indent=2, default=list))
    plot_fn(table, out.with_suffix(".png"))


def report(out: str | Path, md: str, meta: dict[str, Any], table: list[dict[str, Any]],
           plot_fn: Callable[[list[dict[str, Any]], Path], None]) -> None:
    """Print a benchmark's markdown and write its three result files (``write_results``)."""
    print(md)
    write_results(Path(out), md, meta, table, plot_fn)


def run_meta(rows: list[dict[str, Any]], jsonl: str | Path) -> dict[str, Any]:
    """What a run's meta records about where its rows were trained: the CPU (float training differs across
    CPUs), the CPU seconds its tasks took when they were trained (resumed ones included) and the JSONL."""
    from kdhw.util.runtime import cpu_model

    return {"cpu": cpu_model(), "training_cpu_seconds": sum(r["cpu_seconds"] for r in rows), "jsonl": str(jsonl)}


def task_rows(jsonl: str | Path, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished rows of ``tasks`` in ``jsonl`` (which may hold other tasks' rows too)."""
    from kdhw.flows.grid import load_done

    keys = {t["key"] for t in tasks}
    return [r for k, r in load_done(Path(jsonl)).items() if k in keys]


def run_logged(fn: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]], tasks: list[dict[str, Any]],
               teachers: dict[str, Any], jsonl: str | Path, workers: int | None,
               address: str | None = None) -> list[dict[str, Any]]:
    """Run ``tasks`` on ``kdhw.flows.grid`` with the teachers shared, appending to ``jsonl`` (an interrupted run
    resumes); returns every task's row, resumed ones too."""
    from kdhw.flows.grid import run_tasks

    print(f"{len(tasks)} tasks; results append to {jsonl}", flush=True)
    return run_tasks(fn, tasks, shared=teachers, jsonl=Path(jsonl), workers=workers, address=address)


# ---------------------------------------------------------------- command line

def names(text: str) -> list[str]:
    """A comma list from the command line (``"a,b,"`` -> ``["a", "b"]``)."""
    return [x for x in text.split(",") if x]


def parser(doc: str, seeds: int, out: str, first_seed: int | None = None) -> argparse.ArgumentParser:
    """The options of every benchmark on the kd_pays students: --seeds, [--first-seed], --sets, --workers, --out;
    the description is the first line of ``doc`` (the script's docstring)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=seeds)
    if first_seed is not None:
        ap.add_argument("--first-seed", type=int, default=first_seed)
    ap.add_argument("--sets", default="digits,mnist1d")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=out)
    return ap


QUICK_ENV = "KDHW_BENCH_QUICK"  # set name -> [student epochs, teacher epochs], as JSON


def shorten(sets: list[str], epochs: int, teacher_epochs: int = 2) -> None:
    """``--quick``: train the students of ``sets`` for ``epochs`` and their teachers for ``teacher_epochs``
    (numbers meaningless; for a smoke run).  Ray ships a task function defined here (``run_recipe_task``) by
    reference, so its workers import this module afresh: the environment, which they inherit, carries the
    shortened schedule to them (``_shorten_from_env``)."""
    for s in sets:
        SETS[s]["epochs"] = epochs
        SETS[s]["teacher"] = {**SETS[s]["teacher"], "epochs": teacher_epochs}
    os.environ[QUICK_ENV] = json.dumps({s: [epochs, teacher_epochs] for s in sets})


def _shorten_from_env() -> None:
    for s, (epochs, teacher_epochs) in json.loads(os.environ.get(QUICK_ENV) or "{}").items():
        SETS[s]["epochs"] = epochs
        SETS[s]["teacher"] = {**SETS[s]["teacher"], "epochs": teacher_epochs}


_shorten_from_env()


def slug(s: str) -> str:
    """A name as a folder name: every character but letters and digits becomes ``_``."""
    return "".join(c if c.isalnum() else "_" for c in s).strip("_")
