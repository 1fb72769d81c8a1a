"""Training speed of the function-matching arm: today's brevitas path beside the fused one, and a float twin.

The arm timed is the distilled arm ``kdhw run`` trains with a label budget (``distill.recipe: auto`` ->
function matching: augmentation + mixup, the teacher online on every batch, 30x the plain epochs), at 10 %
labels with the validation split cut to the budget, for the four ``kd_pays`` students (digits mlp16_w2 and
mlp8_w4, mnist1d conv4_8_w4 and conv8_16_w4) and for the embedded default student (digits, resource-aware:
its FineNet trains on one-op quantizers that compute the same numbers as its reference ops).  Each arm runs
in three ways, in the same process, interleaved (the order rotates every repeat):

  brevitas   today's code: the brevitas student's own forward, torch.optim.Adam, batches made in the step
             (``kdhw.train.fast.ENABLED = False``)
  fused      the new default: ``kdhw.train.fast.FusedForward`` (the same numbers as brevitas), FlatAdam,
             the teacher and the augmentation made ahead on a worker thread, exact fast max pools
  float      the reference: the same network in plain float torch (no quantizer at all) in the new loop:
             what the arithmetic, the teacher and the loop cost without any fake quantization

The default run is short (``--epochs``: a few hundred steps per arm, statistics phase of brevitas' activation
quantizers included, so a few minutes in all).  ``--full`` times whole arms of brevitas (900 / 720 epochs
at batch 64) beside ``today``: the fused path on the schedule the recipe resolves now (the same epochs at
``kdhw.train.recipe.FM_BATCH_FACTOR`` x the batch, the choice of ``fm_schedule.py --batches``) and the float
twin on that schedule, and, with held-out seeds (default 5, 6, 7; kd_pays uses 0-4), reports the paired
test-accuracy differences today - brevitas with a 95 % bootstrap interval (``--rerender`` rewrites that
section's markdown from its JSON).  ``--run N`` times ``kdhw run`` on the embedded default at 10 % labels, N
fresh processes per path (brevitas, today, and capped: ``CAPPED`` optimizer steps and batch factor, the
choice of ``fm_schedule.py --steps``, off by default).  The short arms of brevitas and fused are also compared step
by step (training loss of every epoch, chosen epoch, test accuracy): equal means the same training.
``--profile`` writes ``train_profile.md``: where a step's time goes (cProfile and torch.profiler), before and
after, plus measured side levers (intra-op threads, torch.compile).

Teachers are the handed-over ones of ``kd_pays`` (trained on the whole labelled train split; the default
student's is trained on its labelled rows, as ``kdhw run`` does); they are cached in
``.kdhw-cache/train_speed`` after the first run.  Timings are wall and process CPU seconds on a shared
2-core machine: compare ratios within one run, not absolute seconds across runs.

    .venv/bin/python -m benchmarks.train_speed                  # ~ a few minutes: short arms, 3 repeats
    .venv/bin/python -m benchmarks.train_speed --full --students mlp16_w2,conv4_8_w4
    .venv/bin/python -m benchmarks.train_speed --profile
    .venv/bin/python -m benchmarks.train_speed --run 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from benchmarks.common import RESULTS, SETS, bootstrap_ci, cached_teacher, task_inputs
from kdhw.train.recipe import FM_BATCH_FACTOR

warnings.filterwarnings("ignore")

MODES = ("brevitas", "fused", "float")
# --full: "capped" = the fused path with function matching's schedule capped in optimizer steps (CAPPED: the
# choice of benchmarks/fm_schedule.py --steps), beside brevitas (the path of commit 5dd8b0b: brevitas forward,
# torch Adam, batches made in the step, epochs_factor 30) and the float twin (new loop, capped schedule)
FULL_MODES = ("brevitas", "today", "float")
CAPPED = (2500, 2)  # (kdhw.train.recipe.FM_STEPS, FM_BATCH_FACTOR) for the capped mode


def _new() -> str:
    """The mode compared with brevitas in this run."""
    return next((m for m in ("today", "capped") if m in MODES), "fused")

DEFAULT = "default"  # the embedded default student (digits, resource-aware)
STUDENTS = ("mlp16_w2", "mlp8_w4", "conv4_8_w4", "conv8_16_w4", DEFAULT)
SHORT_EPOCHS = {"digits": 40, "mnist1d": 24, DEFAULT: 40}  # ~ 700 training steps per arm (300 of them the
# activation quantizers' statistics phase, which the fused path runs layer by layer: short arms understate it)
BUDGET = 0.1


def _set_of(student: str) -> str:
    return next(s for s, v in SETS.items() if student in v["students"]) if student != DEFAULT else DEFAULT


# ---------------------------------------------------------------- teachers and arm inputs

def arm_inputs(student: str, seed: int, log: Any = print) -> dict[str, Any]:
    """Config, data, teacher and recipe of the function-matching arm of ``student`` at 10 % labels."""
    from kdhw.api import load_config
    from kdhw.config import validate
    from kdhw.train.data import load_dataset
    from kdhw.train.recipe import resolve
    from kdhw.train.teacher import build_teacher

    if student == DEFAULT:
        cfg = load_config({"data": {"labels": {"fraction": BUDGET}}, "distill": {"seed": seed}})
        data = load_dataset(cfg.data)
        blob = cached_teacher("default", cfg.teacher, data, log)
        teacher = build_teacher(cfg.teacher, data.shape, data.n_classes)
        teacher.load_state_dict(blob["state"])
        teacher.eval()
        t_train, t_unlab = blob["logits"]["train"], blob["logits"].get("unlab")
    else:
        s = _set_of(student)
        spec_set = SETS[s]
        full = validate({"data": spec_set["data"], "teacher": spec_set["teacher"]}, f"train_speed:{s}")
        shared = {s: cached_teacher(s, full.teacher, load_dataset(full.data), log)}
        raw = {"data": {**spec_set["data"], "labels": {"fraction": BUDGET, "seed": seed, "val": True}},
               "teacher": spec_set["teacher"], "student": spec_set["students"][student],
               "distill": {"epochs": spec_set["epochs"], "seed": seed, "method": "hinton"}}
        cfg, data, teacher, t_train, t_unlab = task_inputs(raw, {"key": f"train_speed/{student}", "set": s}, shared)
    recipe = resolve(cfg.distill, data, teacher, src=f"train_speed:{student}")
    dcfg, method = recipe.arms(cfg.distill["method"])["kd"]
    from kdhw.train.recipe import FM_EPOCHS_FACTOR

    old = {"epochs_factor": FM_EPOCHS_FACTOR, "epochs": int(round(FM_EPOCHS_FACTOR * int(cfg.distill["epochs"]))),
           "batch_size": int(cfg.distill["batch_size"]), "lr": cfg.distill["lr"]}
    return {"student": student, "old_schedule": old,
            "cfg": cfg, "data": data, "teacher": teacher, "t_train": t_train,
            "t_unlab": t_unlab, "dcfg": dcfg, "method": method, "recipe": recipe.describe()}


# ---------------------------------------------------------------- the three ways to train an arm

class FloatTwin:
    """Builds the student's network in plain float torch: Linear / Conv / ReLU / MaxPool / Flatten, no
    quantizer, the brevitas student's initial weights."""

    @staticmethod
    def build(spec: dict[str, Any], input_shape: tuple[int, ...], n_classes: int, src: str = "student") -> Any:
        import brevitas.nn as qnn
        import torch.nn as nn

        from kdhw.train.student import build_student

        ref = build_student({k: v for k, v in spec.items() if k != "resource"}, input_shape, n_classes, src)
        layers = []
        for m in ref.layers:
            if isinstance(m, qnn.QuantLinear):
                f: nn.Module = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            elif isinstance(m, (qnn.QuantConv1d, qnn.QuantConv2d)):
                cls = nn.Conv1d if isinstance(m, qnn.QuantConv1d) else nn.Conv2d
                f = cls(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding, bias=m.bias is not None)
            elif isinstance(m, qnn.QuantReLU):
                f = nn.ReLU()
            elif isinstance(m, qnn.QuantIdentity):
                f = nn.Identity()
            else:
                f = m
            if hasattr(m, "weight") and hasattr(f, "weight"):
                f.weight.data.copy_(m.weight.data)
                if m.bias is not None:
                    f.bias.data.copy_(m.bias.data)
            layers.append(f)
        return _Twin(ref.names, layers)


def _Twin(names: list[str], layers: list[Any]) -> Any:
    import torch.nn as nn

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.names = names
            self.layers = nn.ModuleList(layers)

        def forward(self, x: Any, return_features: bool = False) -> Any:
            feats = {}
            for n, m in zip(self.names, self.layers):
                x = m(x)
                feats[n] = x
            return (x, feats) if return_features else x

    return Twin()


@contextlib.contextmanager
def mode(name: str) -> Iterator[None]:
    """Train arms the ``name`` way (``MODES``) inside the block."""
    import kdhw.train.distill as distill
    from kdhw.train import fast

    build, enabled = distill.build_trainable, fast.ENABLED
    assert name in ("brevitas", "fused", "today", "capped", "float"), name
    fast.ENABLED = name != "brevitas"
    if name == "float":
        distill.build_trainable = FloatTwin.build
    try:
        yield
    finally:
        distill.build_trainable, fast.ENABLED = build, enabled


def train(inp: dict[str, Any], how: str, epochs: int | None = None) -> dict[str, Any]:
    """Train the arm ``how``; wall and process CPU seconds, steps, and what the training produced."""
    import torch

    from kdhw.train.distill import train_arm
    from kdhw.util.runtime import cpu_model

    dcfg = dict(inp["dcfg"])
    if epochs is not None:  # short arms: every mode at the old schedule's batch and rate, for steps/s alike
        dcfg.update({**inp["old_schedule"], "epochs": epochs})
    elif how in ("brevitas", "fused"):  # whole arms of the old schedule: epochs_factor 30, the configured batch
        dcfg.update(inp["old_schedule"])  # (today, capped, float: the schedule the recipe resolves now)
    torch.set_num_threads(1)
    with mode(how):
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        arm = train_arm("kd", inp["cfg"].student, dcfg, inp["data"], inp["t_train"], inp["method"], False,
                        teacher=inp["teacher"], teacher_unlab=inp["t_unlab"])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = len(inp["data"].y_train) + len(inp["data"].unlab)
    steps = arm.fit.epochs_run * -(-rows // int(dcfg["batch_size"]))
    return {"student": inp["student"], "mode": how, "batch_size": int(dcfg["batch_size"]), "lr": float(dcfg["lr"]), "epochs": arm.fit.epochs_run, "steps": steps, "wall_s": wall,
            "cpu_s": cpu, "steps_per_s": steps / wall, "test_acc": arm.test_acc, "best_epoch": arm.fit.best_epoch,
            "losses": [h["loss"] for h in arm.fit.history], "load_before": load0, "load_after": os.getloadavg()[0],
            "cpu": cpu_model()}


# ---------------------------------------------------------------- speed

def speed(students: list[str], seeds: list[int], repeats: int, full: bool, log: Any = print) -> list[dict[str, Any]]:
    rows = []
    for student in students:
        for seed in seeds:
            inp = arm_inputs(student, seed, log)
            epochs = None if full else SHORT_EPOCHS[_set_of(student)]
            for rep in range(repeats):
                k = rep % len(MODES)
                order = MODES[k:] + MODES[:k]
                for how in order:
                    r = train(inp, how, epochs)
                    r.update(seed=seed, repeat=rep)
                    rows.append(r)
                    log(f"[{student} seed {seed} #{rep}] {how:8s} {r['steps']:6d} steps {r['wall_s']:7.1f} s wall "
                        f"{r['cpu_s']:7.1f} s cpu  {r['steps_per_s']:7.1f} steps/s  test {100 * r['test_acc']:.2f} % "
                        f"(load {r['load_before']:.1f})")
    return rows


def _ratio(rows: list[dict[str, Any]], key: str, a: str, b: str) -> tuple[float, list[float]]:
    """Median over (seed, repeat) pairs of rows[a][key] / rows[b][key]."""
    by = {(r["student"], r["seed"], r["repeat"], r["mode"]): r for r in rows}
    rs = [by[(s, sd, rp, a)][key] / by[(s, sd, rp, b)][key] for (s, sd, rp, m) in by if m == b
          and (s, sd, rp, a) in by]
    return (statistics.median(rs) if rs else float("nan")), rs


def summarize(rows: list[dict[str, Any]], full: bool) -> tuple[list[dict[str, Any]], str]:
    table, lines = [], []
    for student in dict.fromkeys(r["student"] for r in rows):
        rs = [r for r in rows if r["student"] == student]
        one = {m: [r for r in rs if r["mode"] == m] for m in MODES}
        new = _new()
        wall, walls = _ratio(rs, "wall_s", "brevitas", new)
        cpu, _ = _ratio(rs, "cpu_s", "brevitas", new)
        flt, _ = _ratio(rs, "wall_s", new, "float")
        same = new == "fused" and all(
            a["losses"] == b["losses"] and a["test_acc"] == b["test_acc"] and a["best_epoch"] == b["best_epoch"]
            for a in one["brevitas"] for b in one["fused"] if (a["seed"], a["repeat"]) == (b["seed"], b["repeat"]))
        steps = {m: one[m][0]["steps"] for m in MODES if one[m]}
        row = {"student": student, "steps": rs[0]["steps"], "steps_by_mode": steps, "epochs": rs[0]["epochs"],
               **{f"{m}_wall_s": statistics.median(r["wall_s"] for r in one[m]) for m in MODES if one[m]},
               **{f"{m}_steps_per_s": statistics.median(r["steps_per_s"] for r in one[m]) for m in MODES if one[m]},
               "speedup_wall": wall, "speedup_wall_each": walls, "speedup_cpu": cpu, "fused_over_float_wall": flt,
               "identical_training": same}
        table.append(row)
        lines.append(f"| {student} | {' / '.join(str(steps[m]) for m in MODES if m in steps)} | " + " | ".join(
            f"{row[f'{m}_wall_s']:.1f} ({row[f'{m}_steps_per_s']:.0f})" if f"{m}_wall_s" in row else "-" for m in MODES)
            + f" | **{wall:.2f}×** ({', '.join(f'{x:.2f}' for x in walls)}) | {cpu:.2f}× | "
            + (f"{flt:.2f}× | " if "float" in MODES else "") + (f"{'yes' if same else 'NO'} |" if new == "fused"
                                                                   else "— (another schedule) |"))
    names = {"brevitas": "brevitas: wall s (steps/s)", "fused": "fused", "today": "today", "capped": "capped",
             "float": "float twin"}
    head = ["| student | steps per arm (" + " / ".join(MODES) + ") | " + " | ".join(names[m] for m in MODES)
            + " | speed-up wall (each repeat) | "
            "speed-up CPU | " + (f"{_new()} / float (wall) | " if "float" in MODES else "") + "identical training |",
            "|---|---|" + "---|" * len(MODES) + "---|---|" + ("---|" if "float" in MODES else "") + "---|"]
    return table, "\n".join(head + lines)


def accuracy_md(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Paired test-accuracy differences fused - brevitas per student over seeds, with a bootstrap CI."""
    out, lines = [], []
    for student in dict.fromkeys(r["student"] for r in rows):
        by = {(r["seed"], r["repeat"], r["mode"]): r for r in rows if r["student"] == student}
        new = _new()
        pairs = [(sd, by[(sd, rp, new)]["test_acc"], by[(sd, rp, "brevitas")]["test_acc"])
                 for (sd, rp, m) in by if m == new and (sd, rp, "brevitas") in by and rp == 0]
        if not pairs:
            continue
        d = [100 * (a - b) for _, a, b in pairs]
        lo, hi = bootstrap_ci(d)
        out.append({"student": student, "seeds": [p[0] for p in pairs], new: [p[1] for p in pairs],
                    "brevitas": [p[2] for p in pairs], "diff_points": d, "mean": float(np.mean(d)), "ci95": [lo, hi]})
        lines.append(f"| {student} | {', '.join(str(p[0]) for p in pairs)} | "
                     f"{', '.join(f'{100 * p[2]:.2f}' for p in pairs)} | {', '.join(f'{100 * p[1]:.2f}' for p in pairs)} | "
                     f"{np.mean(d):+.2f} [{lo:+.2f}, {hi:+.2f}] |")
    new = _new()
    head = [f"| student | seeds | brevitas test % | {new} test % | {new} − brevitas, points (95 % CI) |",
            "|---|---|---|---|---|"]
    return out, "\n".join(head + lines)


# ---------------------------------------------------------------- profile

def _cprofile(inp: dict[str, Any], how: str, epochs: int) -> dict[str, Any]:
    """cProfile of one arm (the main thread: batches made ahead on the worker thread show as waiting); the
    time of each part of a step, from the cumulative time of its entry point."""
    import cProfile
    import inspect
    import pstats

    import kdhw.train.distill  # noqa: F401 - imported before profiling, so no import time is counted
    from brevitas.proxy.parameter_quant import BiasQuantProxyFromInjector, WeightQuantProxyFromInjector
    from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase

    train(inp, how, 1)  # warm: lazy imports, first-call caches
    pr = cProfile.Profile()
    pr.enable()
    r = train(inp, how, epochs)
    pr.disable()
    st = pstats.Stats(pr)
    stats = st.stats  # type: ignore[attr-defined]

    def cum(*names: str, file: str = "") -> float:
        return sum(v[3] for (fname, _, func), v in stats.items() if file in fname and func in names)

    def at(fn: Any) -> float:
        """Cumulative time of one function (the outermost quantizer entry points do not nest)."""
        f = inspect.unwrap(fn)
        path, line = inspect.getsourcefile(f) or "", inspect.getsourcelines(f)[1]
        return sum(v[3] for (fname, ln, _), v in stats.items() if fname == path and ln == line)

    parts = {
        "student forward + loss": cum("loss", file="kdhw/train/distill.py"),
        "of which: brevitas quantizers (weight, bias, activation proxies)": at(WeightQuantProxyFromInjector.forward)
        + at(BiasQuantProxyFromInjector.forward) + at(ActQuantProxyFromInjectorBase.forward),
        "of which: the loss function (losses.hinton)": cum("hinton", file="kdhw/train/losses.py"),
        "backward (autograd engine)": cum("<method 'run_backward' of 'torch._C._EngineBase' objects>"),
        "optimizer step + zero_grad": cum("step", "zero_grad", file="torch/optim/optimizer.py")
        + cum("step_fast", "clear_grads", file="kdhw/train/loop.py"),
        "batches: augmentation, mixup, teacher (fused: waiting for the worker thread)":
            cum("__call__", file="kdhw/train/distill.py"),
        "of which: teacher forward (main thread)": cum("fn", file="kdhw/train/distill.py"),
        "evaluation (validation + teacher agreement, per epoch)": cum("predict_logits", file="kdhw/train/loop.py"),
        "model.train() / eval() walks": cum("train", file="torch/nn/modules/module.py"),
        "Python self time in brevitas code": sum(v[2] for (fname, _, _), v in stats.items()
                                                  if "site-packages/brevitas/" in fname),
    }
    top = []
    for (fname, line, func), (_, nc, tt, ct, _) in sorted(stats.items(), key=lambda kv: -kv[1][3]):
        if "importlib" in fname or func in ("<built-in method builtins.exec>", "<built-in method builtins.__import__>"):
            continue
        top.append({"function": f"{Path(fname).name}:{line}({func})" if fname != "~" else func, "calls": nc,
                    "tottime_s": tt, "cumtime_s": ct})
        if len(top) == 25:
            break
    return {"mode": how, "wall_s_profiled": r["wall_s"], "steps": r["steps"], "parts_s": parts, "top": top}


def _op_profile(inp: dict[str, Any], how: str, steps: int = 60) -> dict[str, Any]:
    """torch.profiler over ``steps`` training steps after the statistics phase: time in aten kernels vs the
    rest (Python and dispatch overhead)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from kdhw.train.loop import adam
    from kdhw.train.losses import get_method

    data, dcfg = inp["data"], inp["dcfg"]
    with mode(how):
        from kdhw.train import fast
        from kdhw.train.distill import build_trainable, student_input

        x = torch.from_numpy(np.ascontiguousarray(student_input(data.x_train, inp["cfg"].student)[:64], np.float32))
        model = build_trainable(inp["cfg"].student, tuple(x.shape[1:]), data.n_classes)
        fast.attach(model)
        for m in model.modules():
            if hasattr(m, "collect_stats_steps"):
                m.collect_stats_steps = 1
        opt = adam(list(model.parameters()), 0.001)
        meth = get_method(inp["method"])
        t = torch.randn(64, data.n_classes)
        y = torch.softmax(torch.randn(64, data.n_classes), 1)
        zero, stp = (opt.clear_grads, opt.step_fast) if hasattr(opt, "step_fast") else (opt.zero_grad, opt.step)
        model.train()

        def step() -> None:
            loss = meth.loss(model(x), t, y, dcfg)
            zero()
            loss.backward()
            stp()

        for _ in range(20):
            step()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(steps):
            step()
        plain = (time.perf_counter() - t1) / steps
    ev = prof.key_averages()
    kernels = sum(e.self_cpu_time_total for e in ev if e.key.startswith("aten::")) / 1e6
    n_ops = sum(e.count for e in ev if e.key.startswith("aten::"))
    top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:12]
    return {"mode": how, "step_us": 1e6 * plain, "profiled_step_us": 1e6 * wall / steps,
            "aten_self_share": kernels / wall, "aten_ops_per_step": n_ops / steps,
            "top_self": [{"op": e.key, "calls_per_step": e.count / steps, "self_us_per_step": e.self_cpu_time_total / steps}
                         for e in top]}


def _threads_and_compile(inp: dict[str, Any], log: Any) -> dict[str, Any]:
    """Side levers: the fused arm at 1 vs 2 intra-op threads, and torch.compile of the brevitas and the fused
    student's training step (compile time and step time)."""
    import torch

    out: dict[str, Any] = {"threads": {}}
    for n in (1, 2):
        with mode("fused"):
            torch.set_num_threads(n)
            try:
                r = _train_threads(inp, n)
            finally:
                torch.set_num_threads(1)
        out["threads"][n] = r
        log(f"  fused arm, {n} intra-op thread(s): {r['wall_s']:.1f} s wall, {r['steps_per_s']:.0f} steps/s")
    out["compile"] = _compile_probe(inp, log)
    return out


def _train_threads(inp: dict[str, Any], n: int) -> dict[str, Any]:
    import torch

    from kdhw.train.distill import train_arm

    dcfg = {**inp["dcfg"], **inp["old_schedule"], "epochs": SHORT_EPOCHS[_set_of(inp["student"])]}
    t0 = time.perf_counter()
    arm = train_arm("kd", inp["cfg"].student, dcfg, inp["data"], inp["t_train"], inp["method"], False,
                    teacher=inp["teacher"], teacher_unlab=inp["t_unlab"])
    wall = time.perf_counter() - t0
    rows = len(inp["data"].y_train) + len(inp["data"].unlab)
    steps = arm.fit.epochs_run * -(-rows // int(dcfg["batch_size"]))
    assert torch.get_num_threads() == n
    return {"wall_s": wall, "steps_per_s": steps / wall, "test_acc": arm.test_acc}


def _compile_probe(inp: dict[str, Any], log: Any, steps: int = 200) -> dict[str, Any]:
    """torch.compile (inductor, CPU) of one training step's forward + loss: compile seconds, step time
    compiled vs eager, and whether the compiled student's outputs equal the eager ones."""
    import torch

    from kdhw.train import fast
    from kdhw.train.distill import student_input
    from kdhw.train.losses import get_method
    from kdhw.train.student import build_student

    data = inp["data"]
    x = torch.from_numpy(np.ascontiguousarray(student_input(data.x_train, inp["cfg"].student)[:64], np.float32))
    spec = {k: v for k, v in inp["cfg"].student.items() if k != "resource"}
    meth = get_method(inp["method"])
    t = torch.randn(64, data.n_classes)
    y = torch.softmax(torch.randn(64, data.n_classes), 1)
    res: dict[str, Any] = {}
    for how in ("brevitas", "fused"):
        torch.manual_seed(0)
        model = build_student(spec, tuple(x.shape[1:]), data.n_classes)
        for m in model.modules():
            if hasattr(m, "collect_stats_steps"):
                m.collect_stats_steps = 1
        model.train()
        model(x)
        model(x)
        if how == "fused":
            fast.attach(model)

        def eager(model: Any = model) -> Any:
            return meth.loss(model(x), t, y, inp["dcfg"])

        def timed(f: Any) -> float:
            for _ in range(5):
                f().backward()
            t0 = time.perf_counter()
            for _ in range(steps):
                f().backward()
            return (time.perf_counter() - t0) / steps

        e = timed(eager)
        try:
            torch._dynamo.reset()
            comp = torch.compile(eager)
            t0 = time.perf_counter()
            comp().backward()
            ctime = time.perf_counter() - t0
            c = timed(comp)
            with torch.no_grad():
                model.eval()
                same = bool(torch.equal(torch.compile(model)(x), model(x)))
                model.train()
            res[how] = {"eager_step_us": 1e6 * e, "compiled_step_us": 1e6 * c, "compile_s": ctime,
                        "eval_outputs_equal": same}
        except Exception as exc:  # noqa: BLE001 - a failed compile is a result here
            res[how] = {"eager_step_us": 1e6 * e, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
        log(f"  torch.compile, {how}: {res[how]}")
    return res


def profile_md(students: list[str], log: Any) -> tuple[dict[str, Any], str]:
    out: dict[str, Any] = {}
    md = ["# Where a function-matching training step spends its time", "",
          "cProfile of one fm arm (10 % labels, seed 5, a short schedule of the arm's own settings: statistics "
          "phase of the activation quantizers included) in today's brevitas path and in the fused path; "
          "torch.profiler of single training steps (student forward + loss + backward + optimizer, after the "
          "statistics phase, batch 64); then side levers.  cProfile inflates Python-heavy code; read the "
          "shares, not the seconds.  `benchmarks/train_speed.py --profile` regenerates this file.", ""]
    for student in students:
        inp = arm_inputs(student, 5, log)
        epochs = {"digits": 25, "mnist1d": 15}[_set_of(student)]
        cp = {how: _cprofile(inp, how, epochs) for how in ("brevitas", "fused")}
        ops = {how: _op_profile(inp, how) for how in ("brevitas", "fused")}
        out[student] = {"cprofile": cp, "ops": ops}
        md += [f"## {student} ({cp['brevitas']['steps']} steps)", "",
               "| part of the arm (cumulative, cProfile) | brevitas s | share | fused s | share |", "|---|---|---|---|---|"]
        for k in cp["brevitas"]["parts_s"]:
            a, b = cp["brevitas"]["parts_s"][k], cp["fused"]["parts_s"][k]
            md.append(f"| {k} | {a:.2f} | {100 * a / cp['brevitas']['wall_s_profiled']:.0f} % | {b:.2f} | "
                      f"{100 * b / cp['fused']['wall_s_profiled']:.0f} % |")
        md.append(f"| whole arm (profiled wall) | {cp['brevitas']['wall_s_profiled']:.2f} | 100 % | "
                  f"{cp['fused']['wall_s_profiled']:.2f} | 100 % |")
        for how in ("brevitas", "fused"):
            md += ["", f"Top functions by cumulative time, {how} path:", "",
                   "| function | calls | cumulative s | self s |", "|---|---|---|---|"]
            md += [f"| `{t['function']}` | {t['calls']} | {t['cumtime_s']:.2f} | {t['tottime_s']:.2f} |"
                   for t in cp[how]["top"][:15]]
        md += ["", "One training step (torch.profiler, student forward + loss + backward + optimizer):", "",
               "| path | step µs (unprofiled) | aten ops per step | aten kernels' self time, share of the profiled step |",
               "|---|---|---|---|"]
        for how in ("brevitas", "fused"):
            o = ops[how]
            md.append(f"| {how} | {o['step_us']:.0f} | {o['aten_ops_per_step']:.0f} | {100 * o['aten_self_share']:.0f} % |")
        md += ["", "Most expensive ops per step (self time), fused path: " + ", ".join(
            f"`{t['op']}` {t['self_us_per_step']:.0f} µs ({t['calls_per_step']:.1f}×)" for t in ops["fused"]["top_self"][:8]),
               ""]
    lever_student = students[-1]
    log(f"side levers on {lever_student}")
    levers = _threads_and_compile(arm_inputs(lever_student, 5, log), log)
    out["levers"] = levers
    th = levers["threads"]
    md += ["## Side levers", "", f"On {lever_student}, fused path, short arm:", "",
           "| intra-op threads | wall s | steps/s |", "|---|---|---|",
           *[f"| {n} | {r['wall_s']:.1f} | {r['steps_per_s']:.0f} |" for n, r in th.items()], "",
           "torch.compile (inductor, CPU) of forward + loss (backward through AOTAutograd):", "",
           "| student forward | eager step µs | compiled step µs | compile s | eval outputs equal |", "|---|---|---|---|---|"]
    for how, r in levers["compile"].items():
        if "error" in r:
            md.append(f"| {how} | {r['eager_step_us']:.0f} | failed: {r['error']} | - | - |")
        else:
            md.append(f"| {how} | {r['eager_step_us']:.0f} | {r['compiled_step_us']:.0f} | {r['compile_s']:.1f} | "
                      f"{'yes' if r['eval_outputs_equal'] else 'NO'} |")
    md += ["", "compile s: the first compiled call in this process; inductor keeps compiled kernels on disk between "
           "runs, and a cold cache took 11.2 s on this machine (the first --profile run).", ""]
    return out, "\n".join(md)


# ---------------------------------------------------------------- main

def _write(section: str, payload: dict[str, Any], md_section: str, out: Path) -> str:
    """Keep the short and the full run side by side in one result file: this run replaces its own section."""
    j = out.with_suffix(".json")
    doc = json.loads(j.read_text()) if j.exists() else {}
    doc[section] = {**payload, "md": md_section}
    j.write_text(json.dumps(doc, indent=1))
    md = "\n\n".join(doc[k]["md"].rstrip() for k in ("short", "full", "run") if k in doc) + "\n"
    out.with_suffix(".md").write_text(md)
    return md


# ---------------------------------------------------------------- kdhw run at 10 % labels

RUN_SCRIPT = """
import sys
from kdhw.train import fast, recipe
if sys.argv[1] == "brevitas":
    fast.ENABLED, recipe.FM_STEPS, recipe.FM_BATCH_FACTOR = False, None, 1
if sys.argv[1] == "capped":
    recipe.FM_STEPS, recipe.FM_BATCH_FACTOR = int(sys.argv[4]), int(sys.argv[5])
from kdhw.cli import main
sys.exit(main(["run", sys.argv[2], "--out", sys.argv[3], "--no-progress"]))
"""


def run_md(modes: list[str], repeats: int, log: Any = print) -> tuple[dict[str, Any], str]:
    """``kdhw run`` on the embedded default config with ``data.labels: {fraction: 0.1}``, each a fresh process,
    ``repeats`` times per mode, interleaved: wall seconds, the report's stage times, the load average.
    brevitas = the path of commit 5dd8b0b (``fast.ENABLED`` off, epochs_factor 30) in the same code."""
    import subprocess
    import sys
    import tempfile

    import yaml

    from kdhw.api import load_config  # noqa: F401 - the embedded default, as `kdhw config` prints it

    tmp = Path(tempfile.mkdtemp(prefix="kdhw-run-speed-"))
    cfg_text = subprocess.run([sys.executable, "-m", "kdhw.cli", "config"], capture_output=True, text=True,
                              check=True).stdout
    cfg = yaml.safe_load(cfg_text)
    cfg["data"]["labels"] = {"fraction": 0.1}
    (tmp / "l01.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for rep in range(repeats):
        for how in (modes if rep % 2 == 0 else modes[::-1]):
            out = tmp / f"out_{how}_{rep}"
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", RUN_SCRIPT, how, str(tmp / "l01.yaml"), str(out),
                                *map(str, CAPPED)], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            rep_json = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
            stages = rep_json.get("timings_s") or {}
            studs = rep_json.get("students") or {}
            r = {"mode": how, "repeat": rep, "wall_s": wall, "rc": p.returncode, "load_before": load0,
                 "load_after": os.getloadavg()[0], "stages": stages,
                 "test": {k: v.get("test_acc") for k, v in studs.items() if isinstance(v, dict)},
                 "epochs": {k: v.get("epochs") for k, v in studs.items() if isinstance(v, dict)},
                 "bit_exact": (rep_json.get("verify") or {}).get("bit_exact")}
            rows.append(r)
            log(f"[kdhw run {how} #{rep}] {wall:.0f} s wall (rc {p.returncode}, load {load0:.1f}) stages "
                + ", ".join(f"{k} {v:.0f}" for k, v in stages.items() if isinstance(v, (int, float))))
    return run_render(rows, modes, repeats)


def run_render(rows: list[dict[str, Any]], modes: list[str], repeats: int) -> tuple[dict[str, Any], str]:
    """The 'run' section (payload, markdown) from its measured rows; only the paths that ran are described."""
    what = {"brevitas": "brevitas = the path of commit 5dd8b0b (reference training ops, epochs_factor 30 at batch 64, "
                        "arms one after another)",
            "today": f"today = this tree (fused paths, epochs_factor 30 at {FM_BATCH_FACTOR} x the batch, scratch_aug "
                     "trained in a second process meanwhile)",
            "capped": f"capped = this tree with function matching capped at {CAPPED[0]:,} optimizer steps of "
                      f"{CAPPED[1]} x the batch (`FM_STEPS`, `FM_BATCH_FACTOR`; not the default)"}
    lines = ["## `kdhw run` on the embedded default with `data.labels: {fraction: 0.1}`", "",
             f"Each run a fresh process (`kdhw run CONFIG --out DIR`), {repeats} interleaved repeat(s) per path; "
             f"{os.cpu_count()}-core machine shared with other jobs.  "
             + "; ".join(what[m] for m in modes if m in what) + ".", "",
             "| path | wall s per run | median | distill stage s | report stage s | load average before | test % (scratch / scratch_aug / kd) | bit-exact |",
             "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for how in modes:
        rs = [r for r in rows if r["mode"] == how]
        med = statistics.median(r["wall_s"] for r in rs)
        summary[how] = med
        dist = [r["stages"].get("distill") for r in rs if isinstance(r["stages"].get("distill"), (int, float))]
        rept = [r["stages"].get("report") for r in rs if isinstance(r["stages"].get("report"), (int, float))]
        tests = rs[0]["test"]
        walls = ", ".join("%.0f" % r["wall_s"] for r in rs)
        loads = ", ".join("%.1f" % r["load_before"] for r in rs)
        exact = ", ".join(str(r["bit_exact"]) for r in rs)
        accs = " / ".join("%.2f" % (100 * tests[k]) for k in ("scratch", "scratch_aug", "kd") if tests.get(k) is not None)
        lines.append(f"| {how} | {walls} | **{med:.0f}** | {', '.join('%.0f' % x for x in dist) or '-'} | "
                     f"{', '.join('%.0f' % x for x in rept) or '-'} | {loads} | {accs} | {exact} |")
    if "brevitas" in summary:
        lines += ["", "Median wall time: " + "; ".join(
            f"{m} {summary[m]:.0f} s ({summary['brevitas'] / summary[m]:.2f}× faster than brevitas)"
            for m in summary if m != "brevitas") + "."]
    return {"runs": rows, "median_wall_s": summary}, "\n".join(lines) + "\n"


def main() -> None:
    global MODES
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", default=",".join(STUDENTS))
    ap.add_argument("--seeds", default=None, help="comma list (default: 5; --full: 5,6,7)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per arm (default 3; --full 1)")
    ap.add_argument("--modes", default=None, help="comma list of brevitas,fused,today,capped,float (--full "
                    "default: brevitas,today,float)")
    ap.add_argument("--rerender", action="store_true", help="rewrite the full and run sections' markdown from "
                    "their JSON")
    ap.add_argument("--full", action="store_true", help="whole arms (900 / 720 epochs) and the accuracy check")
    ap.add_argument("--profile", action="store_true", help="write train_profile.md instead")
    ap.add_argument("--run", type=int, default=0, metavar="N",
                    help="time `kdhw run` at 10 %% labels N times per path instead (the 'run' section)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    students = [s for s in a.students.split(",") if s]
    for s in students:
        if s not in STUDENTS:
            raise SystemExit(f"unknown student {s}; choose from {', '.join(STUDENTS)}")
    import torch

    from kdhw.util.runtime import cpu_model

    torch.set_num_threads(1)
    if a.profile:
        prof_students = [s for s in students if s in ("mlp16_w2", "conv4_8_w4")] or students[:1]
        out, md = profile_md(prof_students, print)
        path = Path(a.out or RESULTS / "train_profile")
        path.with_suffix(".md").write_text(md)
        path.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
        print(md)
        return
    if a.rerender:
        out = Path(a.out or RESULTS / "train_speed")
        doc = json.loads(out.with_suffix(".json").read_text())["full"]
        rows = doc["runs"]
        MODES = tuple(doc["meta"]["modes"])
        wall = float(doc["md"].rsplit("Benchmark wall time ", 1)[1].split(" s.")[0])
        print(_write("full", *compose(rows, doc["meta"]["seeds"], doc["meta"]["repeats"], True, wall), out))
        run = json.loads(out.with_suffix(".json").read_text()).get("run")
        if run:
            modes = list(dict.fromkeys(r["mode"] for r in run["runs"]))
            print(_write("run", *run_render(run["runs"], modes, max(r["repeat"] for r in run["runs"]) + 1), out))
        return
    if a.run:
        payload, md_run = run_md([m for m in (a.modes or "brevitas,today,capped").split(",") if m], a.run)
        print(_write("run", payload, md_run, Path(a.out or RESULTS / "train_speed")))
        return
    MODES = tuple(m for m in (a.modes or (",".join(FULL_MODES) if a.full else ",".join(MODES))).split(",") if m)
    seeds = [int(x) for x in (a.seeds or ("5,6,7" if a.full else "5")).split(",")]
    repeats = a.repeats or (1 if a.full else 3)
    t0 = time.perf_counter()
    rows = speed(students, seeds, repeats, a.full)
    print(_write("full" if a.full else "short", *compose(rows, seeds, repeats, a.full, time.perf_counter() - t0),
                 Path(a.out or RESULTS / "train_speed")))


def compose(rows: list[dict[str, Any]], seeds: list[int], repeats: int, full: bool, wall: float
            ) -> tuple[dict[str, Any], str]:
    """The result section (payload, markdown) of a short or full run."""
    from kdhw.util.runtime import cpu_model

    table, md_speed = summarize(rows, full)
    acc, md_acc = accuracy_md(rows) if full else ([], "")
    what = ("whole arms" if full else
            f"short arms ({', '.join(f'{k}: {v} epochs' for k, v in SHORT_EPOCHS.items())})")
    new = _new()
    today = (f"today = the fused path on the schedule the recipe resolves now (epochs_factor 30 at "
             f"{FM_BATCH_FACTOR} x the batch, learning rate x {FM_BATCH_FACTOR ** 0.5:g}: "
             "`fm_schedule.py --batches`), brevitas on the old one (batch 64), ")
    md = [f"# Training speed of the function-matching arm: {'whole arms' if full else 'short arms'}", "",
          f"Distilled arm of `distill.recipe: auto` at {int(100 * BUDGET)} % labels (validation cut to the budget), "
          f"{what}, seeds {', '.join(map(str, seeds))}, {repeats} interleaved repeat(s); {os.cpu_count()}-core "
          f"{cpu_model()} shared with other jobs (load average per run in the JSON).  brevitas = the path of "
          "commit 5dd8b0b (brevitas forward and, for the resource-aware default, FineNet's reference ops; "
          "torch Adam; batches made in the step), fused = the fused training path (fused fake-quant forward "
          "or FineNet's one-op quantizers, flat Adam, batches and teacher made ahead on a second core, exact "
          "fast max pools), "
          + (f"{new} = fused with the schedule capped at {CAPPED[0]:,} optimizer steps of {CAPPED[1]} x the batch "
             f"at lr x {CAPPED[1] ** 0.5:.3f} (the choice of `fm_schedule.py --steps`; not the default, which keeps "
             "epochs_factor 30: see the accuracy below), brevitas with epochs_factor 30, " if new == "capped" else "")
          + (today if new == "today" else "")
          + "float = the same network without quantizers in the new loop"
          + (f" and the {new} schedule" if new != "fused" else "") + ".  "
          f"Wall seconds (steps/s), medians over repeats; speed-up = brevitas / {new} per repeat, median.  "
          "CPU = process CPU seconds (both threads).", "", md_speed, ""]
    if new == "fused":
        md += ["Identical training: every epoch's training loss, the chosen epoch and the test accuracy of the fused "
               "arm equal the brevitas arm's (the fused forward and FlatAdam compute the same numbers, summed in "
               "the same order).", ""]
    if acc:
        md += [f"### Test accuracy, {new} vs brevitas (paired by seed, held-out seeds)", "", md_acc, ""]
    md += [f"Benchmark wall time {wall:.0f} s.", ""]
    payload = {"meta": {"seeds": seeds, "repeats": repeats, "modes": list(MODES), "short_epochs": SHORT_EPOCHS,
                        "budget": BUDGET, "cores": os.cpu_count(), "cpu": cpu_model(), "capped": CAPPED},
               "table": table, "accuracy": acc, "runs": [{k: v for k, v in r.items() if k != "losses"} for r in rows]}
    return payload, "\n".join(md)


if __name__ == "__main__":
    main()
