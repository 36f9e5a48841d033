"""compare_outputs: the one comparison of a candidate's outputs with a reference's, used by export and bench."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """What a candidate must meet against its reference, per output.

    ``atol``/``rtol`` apply elementwise as in ``numpy.allclose``: ``|c - r| <= atol + rtol * |r|``. The cosine and
    top-1 agreement bounds are for precisions (int8) whose individual logits legitimately move more than any sane
    elementwise bound, but whose predictions must not.
    """
    atol: float
    rtol: float
    min_cosine: float = 0.0
    min_top1_agreement: float = 0.0
    elementwise: bool = True  # False: judge only by cosine and top-1 agreement

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OutputDiff:
    """How one output differs; ``passed`` is decided by the tolerance it was compared with."""
    name: str
    shape_ok: bool
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    top1_agreement: float
    passed: bool
    failures: tuple[str, ...]  # what missed, e.g. "max_abs 3e-3 > atol 1e-4 + rtol …"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failures"] = list(self.failures)
        return d


@dataclass(frozen=True)
class ParityReport:
    reference: str
    candidate: str
    tolerance: Tolerance
    outputs: tuple[OutputDiff, ...]
    samples: int
    inputs: str = "random"  # what was fed: "random" (fixed seed) or "images"

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        return {"reference": self.reference, "candidate": self.candidate, "inputs": self.inputs,
                "samples": self.samples, "passed": self.passed, "tolerance": self.tolerance.to_dict(),
                "outputs": [o.to_dict() for o in self.outputs]}

    def __str__(self) -> str:
        worst = max(self.outputs, key=lambda o: o.max_abs, default=None)
        if worst is None:
            return f"{self.candidate} vs {self.reference}: no outputs compared"
        status = "PASS" if self.passed else "FAIL"
        return (f"{status} {self.candidate} vs {self.reference} ({self.inputs}, n={self.samples}): "
                f"max_abs {worst.max_abs:.3g}, max_rel {worst.max_rel:.3g}, cosine {worst.cosine:.6f}, "
                f"top-1 agreement {worst.top1_agreement:.2%}")


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], tolerance: Tolerance, *,
                    reference_name: str = "reference", candidate_name: str = "candidate",
                    inputs: str = "random") -> ParityReport:
    """Compare every output of ``candidate`` with ``reference``; collects all misses instead of stopping at one.

    Outputs are matched by name; a missing output or a shape mismatch fails that output. Logits are expected as
    ``[batch, classes]`` for the top-1 agreement (other shapes compare the flattened argmax per leading index).
    """
    diffs = []
    for name, ref in reference.items():
        if name not in candidate:
            diffs.append(OutputDiff(name, False, float("inf"), float("inf"), float("inf"), 0.0, 0.0, False,
                                    (f"output {name!r} missing; candidate has {sorted(candidate)}",)))
            continue
        diffs.append(_compare_one(name, np.asarray(ref), np.asarray(candidate[name]), tolerance))
    samples = int(next(iter(reference.values())).shape[0]) if reference else 0
    return ParityReport(reference_name, candidate_name, tolerance, tuple(diffs), samples, inputs)


def _compare_one(name: str, ref: np.ndarray, cand: np.ndarray, tol: Tolerance) -> OutputDiff:
    if ref.shape != cand.shape:
        return OutputDiff(name, False, float("inf"), float("inf"), float("inf"), 0.0, 0.0, False,
                          (f"shape {cand.shape} != reference {ref.shape}",))
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    if not np.all(np.isfinite(c)):
        return OutputDiff(name, True, float("inf"), float("inf"), float("inf"), 0.0, 0.0, False,
                          (f"{int(np.sum(~np.isfinite(c)))} non-finite values",))
    abs_diff = np.abs(c - r)
    rel_diff = abs_diff / np.maximum(np.abs(r), np.finfo(np.float32).tiny)
    cosine = _cosine(r, c)
    agreement = _top1_agreement(r, c)
    failures = []
    if tol.elementwise:
        excess = abs_diff - (tol.atol + tol.rtol * np.abs(r))
        if np.any(excess > 0):
            i = np.unravel_index(int(np.argmax(excess)), excess.shape)
            failures.append(f"{int(np.sum(excess > 0))} of {excess.size} values exceed atol {tol.atol:g} + rtol "
                            f"{tol.rtol:g}·|ref| (worst at {tuple(int(v) for v in i)}: ref {r[i]:.6g}, got {c[i]:.6g})")
    if cosine < tol.min_cosine:
        failures.append(f"cosine {cosine:.6f} < {tol.min_cosine}")
    if agreement < tol.min_top1_agreement:
        failures.append(f"top-1 agreement {agreement:.2%} < {tol.min_top1_agreement:.2%}")
    return OutputDiff(name, True, float(abs_diff.max(initial=0.0)), float(rel_diff.max(initial=0.0)),
                      float(abs_diff.mean()) if abs_diff.size else 0.0, cosine, agreement, not failures,
                      tuple(failures))


def _cosine(r: np.ndarray, c: np.ndarray) -> float:
    """The worst (smallest) per-sample cosine similarity; 1.0 for a pair of all-zero samples."""
    rows = max(r.shape[:1] or (1,))
    r2, c2 = np.atleast_2d(r).reshape(rows, -1), np.atleast_2d(c).reshape(rows, -1)
    num = np.sum(r2 * c2, axis=1)
    den = np.linalg.norm(r2, axis=1) * np.linalg.norm(c2, axis=1)
    cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    return float(np.min(cos)) if cos.size else 1.0


def _top1_agreement(r: np.ndarray, c: np.ndarray) -> float:
    if r.ndim < 2:
        return 1.0
    r2, c2 = r.reshape(r.shape[0], -1), c.reshape(c.shape[0], -1)
    return float(np.mean(r2.argmax(1) == c2.argmax(1)))
