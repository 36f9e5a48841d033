"""Which runtime runs which file: per runtime and precision, the file in the LRN form it runs fastest."""
from __future__ import annotations

from typing import Sequence

from core.onnx_file import OnnxInfo
from deploy.models import reference_model
from deploy.serving.executors import ServingTarget
from deploy.serving.plan import CapacityPlan
from runtimes.errors import RuntimeUnavailableError
from runtimes.registry import availability, runtime_class


def plan_targets(infos: Sequence[OnnxInfo], plan: CapacityPlan) -> tuple[list[ServingTarget], dict[str, str]]:
    """The targets to measure and the runtime × precision pairs skipped, with the reason.

    ``auto``: each precision among the files, on the file whose LRN form is the runtime's ``preferred_lrn`` (else
    the first of that precision). ``bf16``: the fp32 file computed in bf16, where the runtime does it natively. The
    torch runtime runs the checkpoint the files were exported from (fp32 and bf16 only).

    Raises:
        RuntimeUnavailableError: a named runtime that cannot run here (not installed, no GPU).
        UsageError: nothing left to measure.
    """
    from core.errors import UsageError

    targets: list[ServingTarget] = []
    skipped: dict[str, str] = {}
    for name in plan.runtimes:
        ok, reason = availability(name)
        if not ok:
            raise RuntimeUnavailableError(f"{name}: {reason}")
        cls = runtime_class(name)
        for option in plan.precisions:
            if option == "bf16" and not any(i.precision == "fp32" for i in infos):
                skipped[f"{name} bf16"] = "bf16 computes an fp32 file: none was given"
            for precision, info in _files(infos, cls.preferred_lrn, option).items():
                label = f"{name} {'bf16' if option == 'bf16' else precision}"
                ok, reason = cls.supports("bf16") if option == "bf16" else (True, "")
                if ok and not cls.runs_onnx and precision in ("fp16", "int8"):
                    ok, reason = False, "the torch runtime runs the fp32 checkpoint; its fp16/int8 are the files"
                torch_model = None
                if ok and not cls.runs_onnx:
                    torch_model, why = reference_model(info.meta)
                    ok, reason = torch_model is not None, f"no PyTorch checkpoint: {why}"
                if not ok:
                    skipped[label] = reason
                elif all(t.label != label for t in targets):
                    targets.append(ServingTarget(name, info.path, info, torch_model,
                                                 "bf16" if option == "bf16" else None))
    if not targets:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise UsageError(f"nothing to measure: {reasons or 'no runtime × precision'}")
    return targets, skipped


def _files(infos: Sequence[OnnxInfo], preferred_lrn: str, option: str) -> dict[str, OnnxInfo]:
    """Precision → the file a runtime preferring ``preferred_lrn`` runs (bf16: the fp32 files only)."""
    chosen: dict[str, OnnxInfo] = {}
    for info in infos:
        if option == "bf16" and info.precision != "fp32":
            continue
        lrn = info.meta.lrn if info.meta else ""
        current = chosen.get(info.precision)
        if current is None or (lrn == preferred_lrn and (current.meta.lrn if current.meta else "") != preferred_lrn):
            chosen[info.precision] = info
    return chosen
