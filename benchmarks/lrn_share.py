"""What AlexNet's two LRNs cost in the exported fp32 and int8 graphs on ONNX Runtime CPU: each graph against the
same export with the LRNs taken out, timed interleaved in one process.

    .venv/bin/python benchmarks/lrn_share.py [--checkpoint RUN] [--batch-sizes 1,32] [--rounds 7] [--threads 2]
                                             [--calls 1:10,32:2]

The LRN-free graphs are not AlexNet (their outputs differ; parity is not checked): they bound what any LRN
formulation could gain. Default weights: a random 1000-class checkpoint, as in ``benchmarks/export.py``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _export(checkpoint: Path, path: Path, precision: str, with_lrn: bool) -> Path:
    from torch import nn

    import export.lrn as lrn_forms
    from benchmarks.export import _lenient
    from export.exporter import export_onnx
    from export.spec import ExportSpec

    swap = lrn_forms.with_lrn_ops

    def without_lrn(model):  # the exporter's own LRN swap, then every LRN op replaced by an identity
        model, _ = swap(model)
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, lrn_forms._LrnOp):
                    setattr(parent, name, nn.Identity())
        return model, []

    lrn_forms.with_lrn_ops = swap if with_lrn else without_lrn
    try:  # random weights can miss the int8 gates; only the graph's speed matters here
        export_onnx(checkpoint, path, ExportSpec(precision=precision, tolerance=_lenient(), max_accuracy_drop=100.0))
    finally:
        lrn_forms.with_lrn_ops = swap
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="run folder or .safetensors (default: random 1000-class)")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per batch size")
    parser.add_argument("--calls", default="1:10,32:2", help="timed calls per graph per round, per batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import onnxruntime as ort

    from benchmarks.export import _random_checkpoint

    with tempfile.TemporaryDirectory(prefix="lrn-share-") as tmp:  # ~700 MB of graphs, removed afterwards
        checkpoint = args.checkpoint or _random_checkpoint(Path(tmp) / "run")
        graphs = {(precision, with_lrn): _export(checkpoint, Path(tmp) / f"{precision}-{with_lrn}.onnx", precision,
                                                 with_lrn)
                  for precision in ("fp32", "int8") for with_lrn in (True, False)}
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        sessions = {key: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                    for key, path in graphs.items()}
    calls = {int(k): int(v) for k, v in (item.split(":") for item in args.calls.split(","))}
    print(f"\nONNX Runtime CPU, {args.threads} threads, median over {args.rounds} interleaved rounds\n")
    print("| precision | batch | with LRN ms | without ms | LRN share of the time | without / with img/s |")
    print("|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        x = np.random.default_rng(0).standard_normal((batch, 3, 227, 227), dtype=np.float32)
        times: dict[tuple[str, bool], list[float]] = {key: [] for key in sessions}
        for session in sessions.values():
            session.run(None, {"input": x})
        for _ in range(args.rounds):
            for key, session in sessions.items():
                for _ in range(calls.get(batch, 2)):
                    start = time.perf_counter()
                    session.run(None, {"input": x})
                    times[key].append(time.perf_counter() - start)
                time.sleep(0.03)  # the previous session's spinning threads would steal the next one's cores
        for precision in ("fp32", "int8"):
            with_ms, without_ms = (statistics.median(times[(precision, w)]) * 1e3 for w in (True, False))
            print(f"| {precision} | {batch} | {with_ms:.1f} | {without_ms:.1f} | {1 - without_ms / with_ms:.0%} | "
                  f"{batch / without_ms * 1e3:.0f} / {batch / with_ms * 1e3:.0f} |")


if __name__ == "__main__":
    main()
