"""The pipeline's look inside its recommendation: layer parity and layer time of each recommended deployment
(deploy/layers/), recorded in report.json and shown in report.md."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from core.errors import ToolkitError, first_line
from deploy.models import TorchModel
from deploy.pipeline.report import PipelineRecord
from runtimes.options import RuntimeOptions

log = logging.getLogger(__name__)
LAYER_IMAGES = 32   # validation images the layer comparison runs on: enough for the error to settle, ~1 s a runtime


def layers_stage(torch_model: TorchModel, meta: Mapping[str, Any], record: PipelineRecord,
                 options: RuntimeOptions) -> None:
    """Each distinct recommended runtime × precision (latency at its batch, throughput at its batch), layer by
    layer. A diagnosis, not a check: what cannot be run is a note, never a failure."""
    from deploy.layers.inspect import layer_table
    from deploy.task_parity import load_task_images

    started = time.perf_counter()
    try:
        report = record.to_dict()
        picks = _picks(report["recommendation"])
        if not picks:
            return
        images, note = load_task_images(meta, LAYER_IMAGES)
        if images is None:
            record.notes.append(f"layer tables skipped: {note}")
            return
        for objective, pick in picks.items():
            run_options = dataclasses.replace(options, precision="bf16" if pick["precision"] == "bf16" else None)
            # The layer times sit beside the p50 the bench measured for this very row (same adapter, batch, file).
            p50 = next(r["p50_ms"] for r in report["rows"] if (r["runtime"], r["precision"], r["batch_size"]) ==
                       (pick["runtime"], pick["precision"], pick["batch_size"]))
            try:
                table = layer_table(pick["runtime"], pick["precision"], Path(pick["model"]), torch_model,
                                    images.tensors, run_options, batch_size=pick["batch_size"],
                                    timer=lambda rt, feeds, p50=p50: p50)
            except ToolkitError as e:
                record.notes.append(f"layer table of {pick['runtime']} {pick['precision']}: {first_line(e)}")
                continue
            record.layers[objective] = {"runtime": pick["runtime"], "precision": pick["precision"],
                                        "model": pick["model"], "batch_size": pick["batch_size"],
                                        "images": len(images), **table.to_dict()}
    finally:
        record.timings_s["layers"] = time.perf_counter() - started


def _picks(recommendation: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """objective → its pick, once per runtime × precision × batch (a pick that wins both is shown once)."""
    out: dict[str, Mapping[str, Any]] = {}
    seen = set()
    for objective in ("latency", "throughput"):
        pick = recommendation.get(objective)
        if not pick or not pick.get("model") or pick["runtime"] == "torch":
            continue  # torch is the reference itself: its layer error is zero by definition
        key = (pick["runtime"], pick["precision"], pick["batch_size"])
        if key not in seen:
            seen.add(key)
            out[objective] = pick
    return out
