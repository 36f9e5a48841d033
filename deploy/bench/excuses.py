"""What besides the change can slow a timing between a baseline and this run, from the environment each report
records: other processes' CPU share, the host's speed on a fixed reference computation, and the fingerprint (CPU,
libraries, threads). The gate (deploy/bench/gate.py) turns a regression into "inconclusive" only within what an
``Excuse`` explains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# Other processes taking this much more of the CPUs than during the baseline excuse a slowdown (inconclusive, not
# regressed): on 2 cores, 5 points is a tenth of a core, enough to slow a 2-thread runtime well beyond 5 % (its
# threads wait for the one that shares its core); a quiet machine reads 0-2 %.
BUSIER_BY = 0.05


@dataclass(frozen=True)
class Excuse:
    """Why this run's timings may be slower for reasons other than the change, and by how much at most: a timing
    whose ratio's whole interval lies beyond ``factor`` × (1 + allowed slowdown) is slower than that can explain."""
    what: str       # "the busier machine", "the slower host"
    why: str
    factor: float


def busier(old_env: Mapping[str, Any], new_env: Mapping[str, Any]) -> Excuse | None:
    """Why this run's machine was busier than the baseline's, or None: other processes (and steal) took more than
    BUSIER_BY more of the CPUs while it was measured."""
    def share(env: Mapping[str, Any]) -> float | None:
        load = env.get("load") or {}
        other = load.get("other_processes_cpu_share")
        return None if other is None else other + (load.get("steal_share") or 0.0)

    before, now = share(old_env), share(new_env)
    if before is None or now is None or now - before <= BUSIER_BY:
        return None
    # Losing a share d of the CPUs slows CPU-bound work by 1/(1-d); threads that wait for the one sharing a core can
    # lose about as much again, so the excuse covers the square of it (one core of two taken: up to 4x).
    factor = 1 / max(1 - (now - before), 0.1) ** 2
    why = (f"the machine was busier than for the baseline (other processes and steal {before:.0%} → {now:.0%} of "
           "the CPUs): the slowdown may be theirs; re-run when it is as quiet as for the baseline")
    return Excuse("the busier machine", why, factor)


def host_slower(old_env: Mapping[str, Any], new_env: Mapping[str, Any]) -> Excuse | None:
    """Why this run's host was slower than the baseline's, or None: the fixed reference computation each bench times
    between its rounds (core.load.host_canary_ms) took more than BUSIER_BY longer."""
    def p50(env: Mapping[str, Any]) -> float | None:
        return ((env.get("load") or {}).get("host_canary") or {}).get("p50_ms")

    before, now = p50(old_env), p50(new_env)
    if not before or not now or now / before - 1 <= BUSIER_BY:
        return None
    # A sort is not a GEMM: a host r times slower on it may be more than r slower on the model (memory bandwidth,
    # clocks under load); the excuse covers r squared, no more (20 % slower: up to 1.44x).
    why = (f"this host ran a fixed reference computation {now / before - 1:.0%} slower than for the baseline "
           f"({before:.2f} → {now:.2f} ms): the slowdown may be the host's; re-run when it is as fast as for the "
           "baseline")
    return Excuse("the slower host", why, (now / before) ** 2)


def environment_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """What differs between two environment fingerprints that can move a timing: CPU, GPU, library versions and
    thread settings (host names and timestamps are left out)."""
    def flat(env: Mapping[str, Any]) -> dict[str, Any]:
        cpu, gpu = env.get("cpu") or {}, env.get("gpu") or {}
        load = cpu.get("load_average_1min")  # other work on the machine, in half-cores (finer is noise)
        busy = (env.get("load") or {}).get("other_processes_cpu_share")  # measured during the run itself
        out = {"cpu.model": cpu.get("model"), "cpu.usable_cores": cpu.get("usable_cores"),
               "cpu.load_average_1min": None if load is None else round(load * 2) / 2,
               "load.other_processes_cpu_share": None if busy is None else f"{round(busy * 10) * 10}%",
               "gpu.name": gpu.get("name"), "gpu.driver": gpu.get("driver"), "python": env.get("python")}
        out.update({f"libraries.{k}": v for k, v in (env.get("libraries") or {}).items()})
        out.update({f"threads.{k}": v for k, v in (env.get("threads") or {}).items()})
        return out

    a, b = flat(old), flat(new)
    return tuple(f"{k}: {a.get(k)} → {b.get(k)}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k))
