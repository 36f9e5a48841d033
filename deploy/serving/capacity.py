"""run_capacity: for each runtime × precision, the Server QPS this machine sustains at a p99 latency SLO (and Offline,
SingleStream, MultiStream), measured with MLPerf LoadGen; the library entry point of ``cli.py capacity``."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from core.errors import ToolkitError, UsageError
from core.fileio import SetAside, check_writable, recover_set_aside
from core.host import usable_cores
from core.onnx_file import OnnxInfo, read_onnx_info
from deploy.serving.plan import CapacityPlan
from deploy.serving.progress import SearchProgress
from deploy.serving.qsl import load_sample_set
from deploy.serving.report import REPORT_NAMES, CapacityRecord
from deploy.serving.rows import RowRunner
from deploy.serving.targets import plan_targets
from deploy.serving.trials import loadgen

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CapacityReport:
    """What a capacity run wrote (``out_dir/capacity.json`` holds :meth:`to_dict`)."""
    data: dict[str, Any]
    out_dir: Path
    interrupted: bool
    failures: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @property
    def recommendation(self) -> dict[str, Any] | None:
        """The runtime × precision × configuration with the most Server QPS at the SLO within the accuracy budget
        (what a deployment verdict reads), or None."""
        return self.data["recommendation"]

    def __str__(self) -> str:
        r = self.recommendation
        return (f"capacity at p99 <= {self.data['slo_ms']:g} ms: " + (
            f"{r['runtime']} {r['precision']} {r['server_max_qps']:g} QPS" if r else "no configuration met it"))


def run_capacity(models: Sequence[str | os.PathLike], plan: CapacityPlan, out_dir: str | os.PathLike,
                 progress: SearchProgress | None = None) -> CapacityReport:
    """Measure every runtime × precision of ``plan`` on ``models`` and write the capacity report into ``out_dir``.

    Each runtime runs, per precision, the file in the LRN form it runs fastest (the others of that precision are
    not repeated). The report (capacity.json, capacity.md, capacity.png, trials/ with LoadGen's logs of every run)
    is rewritten after each runtime × precision, so a failure or Ctrl-C keeps what finished; an earlier report in
    ``out_dir`` is replaced (``plan.overwrite``) only once the new one exists.

    Raises:
        UsageError: a model given twice or inside the report's entries, ``out_dir`` a file, an SLO below the
            fastest single-sample latency measured here (the message names it).
        UnavailableError: LoadGen or a named runtime is not installed (the message says how to install it).
        OutputExistsError: ``out_dir`` holds a capacity report and ``plan.overwrite`` is off.
        OnnxFileError: a model that cannot be read.
    """
    progress = progress or SearchProgress()
    start = time.perf_counter()
    lg = loadgen()
    out_dir = Path(out_dir)
    infos = _read_models(models)
    targets, skipped = plan_targets(infos, plan)
    check_output(out_dir, [i.path for i in infos], plan.overwrite)
    cores = plan.threads or usable_cores()
    progress.stage(f"loading {plan.images} samples and their reference top-1")
    sample_set = load_sample_set(infos, plan.images, plan.seed)
    runners = [RowRunner(t, plan, sample_set, out_dir, progress, cores) for t in targets]
    p50s, failures = _single_sample_latencies(runners, plan, progress)
    aside = _claim(out_dir)
    record = CapacityRecord(out_dir, plan, sample_set, skipped, cores, lg.__name__)
    interrupted, data = False, {}
    try:
        for runner in runners:
            if runner.target.label in failures:
                record.add(record.failed_row(runner, failures[runner.target.label]))
                continue
            progress.stage(f"{runner.target.label}: {runner.target.model.name}")
            record.measure(runner, p50s[runner.target.label], progress)
            record.write(time.perf_counter() - start, partial=True)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: the report holds the runs that finished")
    finally:
        for runner in runners:
            runner.close()
        if record.rows or interrupted:
            data = record.write(time.perf_counter() - start, partial=interrupted)
        aside.settle(out_dir / "capacity.json")
    return CapacityReport(data, out_dir, interrupted, tuple(record.failures()))


def _read_models(models: Sequence[str | os.PathLike]) -> list[OnnxInfo]:
    if not models:
        raise UsageError("no model given: pass one or more ONNX files")
    resolved = [Path(m).resolve() for m in models]
    twice = sorted({str(m) for m in models if resolved.count(Path(m).resolve()) > 1})
    if twice:
        raise UsageError(f"{', '.join(twice)} given more than once")
    return [read_onnx_info(m) for m in models]


def check_output(out_dir: Path, models: Sequence[Path], overwrite: bool) -> None:
    """Refuse an output folder that is a file, would replace an input model, or holds a capacity report (unless
    ``overwrite``), before anything is measured (nothing is created here).

    Raises:
        UsageError: out_dir is a file or an input would be replaced. OutputExistsError: an earlier report.
    """
    from trainer.errors import OutputExistsError

    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder for the capacity report")
    entries = [(out_dir / name).resolve() for name in REPORT_NAMES]
    for model in models:
        m = model.resolve()
        if m == out_dir.resolve() or any(m == e or e in m.parents for e in entries):
            raise UsageError(f"--out {out_dir}: the report would replace the input {model}; choose another folder")
    if out_dir.is_dir() and recover_set_aside(out_dir, list(REPORT_NAMES)):
        log.warning("%s: put back the earlier report that an interrupted --overwrite had set aside", out_dir)
    earlier = [out_dir / n for n in REPORT_NAMES if (out_dir / n).exists()]
    if earlier and not overwrite:
        raise OutputExistsError(f"{out_dir} already holds a capacity report ({', '.join(map(str, earlier))}); pick "
                                "another --out or replace it with --overwrite")


def _claim(out_dir: Path) -> SetAside:
    check_writable(out_dir / "capacity.json", "--out")  # creates the folder
    aside = SetAside(out_dir, list(REPORT_NAMES))
    if aside.moved:
        log.warning("--overwrite: the earlier report in %s is set aside until the new one is written", out_dir)
    return aside


def _single_sample_latencies(runners: list[RowRunner], plan: CapacityPlan,
                             progress: SearchProgress) -> tuple[dict[str, float], dict[str, str]]:
    """Each target's single-sample p50 (loading it once); the SLO must not be below the fastest.

    Raises:
        UsageError: ``plan.slo_ms`` below every measured p50 (no configuration can meet it).
    """
    p50s, failures = {}, {}
    for runner in runners:
        progress.stage(f"{runner.target.label}: loading {runner.target.model.name} and timing one sample")
        try:
            p50s[runner.target.label] = runner.single_sample_p50()
        except ToolkitError as e:
            failures[runner.target.label] = str(e)
            log.error("%s: %s", runner.target.label, e)
        finally:
            runner.close()
    if p50s and plan.slo_ms < min(p50s.values()):
        label = min(p50s, key=p50s.get)
        raise UsageError(f"--slo-ms {plan.slo_ms:g} is below what one sample takes here: the fastest measured "
                         f"single-sample p50 is {p50s[label]:.2f} ms ({label}); no configuration can meet it")
    return p50s, failures
