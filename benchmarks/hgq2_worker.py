"""HGQ2 side of benchmarks/pareto_vs_hgq2.py; runs inside .hgq2-venv (KERAS_BACKEND=torch), never imports kdhw.

Trains an HGQ2 model on the split kdhw exported (same arrays), with per-weight and per-activation learned
bit widths and beta x EBOPs, keeping every Pareto checkpoint (validation accuracy vs EBOPs).  Two schedules:
``--beta-max B`` (ramped): beta grows log-linearly over training (from 1e-7 after the first tenth of the
epochs to B), Adam at a constant lr 1e-2, batch 64; ``--beta B`` (constant): beta B from the first epoch,
Adam with lr 1e-2 decayed to 0 by a cosine over all steps, batch 128.  Each checkpoint is traced by da4ml into pipelined Verilog; the da4ml
interpreter is compared with the Keras model on the test rows (bit-exact check), and the driver synthesizes
the Verilog with the same yosys as kdhw's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def build(name: str, shape: tuple[int, ...]) -> keras.Model:
    from hgq.config import LayerConfigScope, QuantizerConfigScope
    from hgq.layers import QConv1D, QDense, QMaxPool1D

    with (QuantizerConfigScope(place="all", default_q_type="kbi", overflow_mode="SAT_SYM"),
          QuantizerConfigScope(place="datalane", default_q_type="kif", overflow_mode="WRAP"),
          LayerConfigScope(enable_ebops=True, beta0=1e-5)):
        if name == "digits":
            layers = [keras.layers.Input(shape), QDense(16, activation="relu"), QDense(10)]
        else:  # the kdhw mnist1d student: conv 4 -> pool 2 -> conv 8 -> pool 2 -> dense 10 (channels-last)
            layers = [keras.layers.Input(shape), QConv1D(4, 3, activation="relu"), QMaxPool1D(2),
                      QConv1D(8, 3, activation="relu"), QMaxPool1D(2), keras.layers.Flatten(),
                      QDense(10)]
    return keras.Sequential(layers)


def trace_to_verilog(model: keras.Model, out: Path, cutoff: float = 5.0) -> tuple[object, dict]:
    from da4ml.codegen import VerilogModel
    from da4ml.converter import trace_model
    from da4ml.trace import comb_trace, to_pipeline

    inp, outp = trace_model(model)
    comb = comb_trace(inp, outp)
    pipe = to_pipeline(comb, cutoff, verbose=False)
    top = "hgq_top"
    VerilogModel(pipe, top, out, latency_cutoff=cutoff).write()
    stages = sorted((out / "src").glob(f"{top}_stage*.v"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    used = "\n".join(p.read_text() for p in stages)
    statics = [p for p in (out / "src" / "static").glob("*.v") if re.search(rf"\b{p.stem}\s+#\(", used)]
    files = [str(p.relative_to(out)) for p in statics + stages] + [f"src/{top}.v"]
    meta = {"top": top, "verilog_files": files, "latency_cycles": len(pipe.solutions)}
    (out / "rtl.json").write_text(json.dumps(meta))
    return comb, meta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--beta-max", type=float, default=1e-4, help="beta at the end of the log ramp")
    ap.add_argument("--beta", type=float, default=None,
                    help="constant beta instead of the ramp (with cosine-decayed lr and batch 128)")
    a = ap.parse_args()
    from hgq.utils.sugar import BetaScheduler, FreeEBOPs, ParetoFront, PieceWiseSchedule

    out = Path(a.out)
    z = np.load(a.split)
    prep = (lambda x: x.reshape(len(x), -1)) if a.data == "digits" else (lambda x: np.transpose(x, (0, 2, 1)))
    xtr, xva, xte = (prep(z[k]).astype(np.float32) for k in ("x_train", "x_val", "x_test"))
    ytr, yva, yte = z["y_train"], z["y_val"], z["y_test"]
    epochs = 5 if a.quick else (300 if a.data == "digits" else 150)
    keras.utils.set_random_seed(0)
    model = build(a.data, xtr.shape[1:])
    const = a.beta is not None
    batch = 128 if const else 64
    lr = keras.optimizers.schedules.CosineDecay(1e-2, epochs * -(-len(xtr) // batch)) if const else 1e-2
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    ckpt = out / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    beta = BetaScheduler(PieceWiseSchedule([(0, a.beta, "constant")] if const else
                                           [(0, 1e-7, "constant"), (epochs // 10, 1e-7, "log"),
                                            (epochs, a.beta_max, "constant")]))
    pf = ParetoFront(str(ckpt), ["val_accuracy", "ebops"], [1, -1], fname_format="epoch={epoch}_val={val_accuracy:.4f}_ebops={ebops}.keras")
    model.fit(xtr, ytr, validation_data=(xva, yva), epochs=epochs, batch_size=batch, verbose=0,
              callbacks=[FreeEBOPs(), beta, pf])
    points = []
    for f in sorted(ckpt.glob("*.keras")):
        m = keras.models.load_model(f)
        ep = int(re.search(r"epoch=(\d+)", f.name).group(1))
        ebops = float(re.search(r"ebops=([\d.e+]+)", f.name).group(1))
        logits_te = np.asarray(m.predict(xte, verbose=0))
        logits_va = np.asarray(m.predict(xva, verbose=0))
        rtl = out / f"rtl_{ep}"
        comb, meta = trace_to_verilog(m, rtl)
        da = np.asarray(comb.predict(xte)).reshape(logits_te.shape)
        points.append({"epoch": ep, "ebops": ebops, "file": f.name, "rtl": rtl.name,
                       "test_acc": float((logits_te.argmax(1) == yte).mean()),
                       "val_acc": float((logits_va.argmax(1) == yva).mean()),
                       "bit_exact_test": bool(np.array_equal(da, logits_te)),
                       "latency_cycles": meta["latency_cycles"]})
        print(f"epoch {ep}: test {points[-1]['test_acc']:.4f} ebops {ebops:.0f} exact {points[-1]['bit_exact_test']}",
              flush=True)
    sched = ({"kind": "constant", "beta": a.beta, "lr": "1e-2 cosine to 0"} if const else
             {"kind": "ramped", "beta_max": a.beta_max, "lr": "1e-2 constant"})
    (out / "points.json").write_text(json.dumps({"epochs": epochs, "batch": batch, **sched, "points": points},
                                                indent=1))


if __name__ == "__main__":
    main()
