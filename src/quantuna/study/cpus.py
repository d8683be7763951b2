"""Which CPU measured a latency, and the one CPU a study's latencies are compared on.

A latency, its ratio to fp32 and the weighted score made from that ratio are compared only with
figures measured on the same CPU: the ratio is to an fp32 session timed in the same process, so
it cancels drift, not the machine (with VNNI an int8 model may run at 0.5x fp32, at 1.1x without).

**The CPU key** is the CPU model name, the int8 ISA features of :data:`attrs.INT8_ISA` and the
latency threads (``measure.performance.threads``):

- the model name fixes the microarchitecture and, mostly, the clock;
- the ISA features, because a hypervisor can hide AVX-512, VNNI or AMX from a guest of the same
  model, and they decide which int8 kernels onnxruntime runs;
- the threads, because the intra-op threads of the timing loop change the latency directly.

The host name is not in it (two machines of one kind compare fine), nor the physical cores (the
timing loop runs a fixed number of threads, 1 by default).

**The reference CPU**, whose trials the front, the pick, the confirm phase and the summary
compare; the first rule that applies:

1. the one asked for (``quantuna show|export|report --cpu``, ``load_results(..., cpu=)``);
2. the CPU the last confirm phase ran on (its figures are the ones reported);
3. this host's CPU, when it measured trials of the study;
4. the CPU that measured the most trials (ties: the baseline's CPU, then by name).

The fp32 trial belongs to every CPU: it is the reference, ratio 1 wherever it is timed.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quantuna.errors import SpecError
from quantuna.study import attrs

MEASURED_ON = "measured_on"  # a confirmed figure's CPU facts (cpu, cpu_isa, threads)


@dataclass(frozen=True, order=True)
class Cpu:
    """A CPU key: ``label`` for people (``Xeon ... (avx2, avx512_vnni; 1 thread)``), ``id`` for
    ``--cpu`` (8 hex digits of the key's hash)."""

    label: str
    id: str


UNKNOWN = Cpu("an unrecorded CPU", "unknown")


def cpu_of(facts: Mapping[str, Any], threads: int | None = None) -> Cpu | None:
    """The CPU key of a record carrying host facts (a trial's attrs, the baseline, a confirm
    record); ``threads``: the latency threads when the record has none. None without a CPU."""
    name = facts.get(attrs.CPU)
    if not name:
        return None
    have = facts.get(attrs.CPU_ISA) or []
    isa = [f for f in attrs.INT8_ISA if f in have]
    n = (facts.get(attrs.THREADS) or {}).get("latency", threads)
    shown = [", ".join(isa) or "no int8 ISA extension"]
    shown += [] if n is None else [f"{n} thread{'' if n == 1 else 's'}"]
    label = f"{name} ({'; '.join(shown)})"
    digest = hashlib.sha1(json.dumps([name, isa, n]).encode(), usedforsecurity=False).hexdigest()
    return Cpu(label, digest[:8])


def facts_of(facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a record that make its CPU key (what a confirmed figure keeps)."""
    return {k: facts.get(k) for k in (attrs.CPU, attrs.CPU_ISA, attrs.THREADS)}


def measured_on(stored: Mapping[str, Any], by_number: Mapping[int, Mapping[str, Any]],
                threads: int | None = None) -> Cpu | None:
    """The CPU that timed a trial's own latency: its own, or that of the trial it reused (the
    chain followed). None for the fp32 model (the reference, ratio 1 on every CPU)."""
    seen: set[int] = set()
    while True:
        if stored.get(attrs.AS_FP32) or stored.get(attrs.REUSED_FROM) == "baseline":
            return None
        source = stored.get(attrs.REUSED_FROM)
        if not isinstance(source, int) or source in seen or source not in by_number:
            break
        seen.add(source)
        stored = by_number[source]
    return cpu_of(stored, threads) or UNKNOWN


@dataclass(frozen=True)
class CpuView:
    """The CPUs that timed a study's trials and the one they are compared on.

    Attributes:
        reference: the CPU whose trials the front and the pick compare.
        why: which rule of the module docs chose it.
        trials: complete trials with a latency per CPU (the fp32 trial counts on none).
        fp32_ms: fp32's latency on the reference CPU (confirmed, baseline, or the median of the
            fp32 sessions its trials were timed against), None when unknown.
    """

    reference: Cpu
    why: str
    trials: dict[Cpu, int] = field(default_factory=dict)
    fp32_ms: float | None = None

    @property
    def mixed(self) -> bool:
        """More than one CPU timed the trials."""
        return len(self.trials) > 1

    @property
    def others(self) -> list[tuple[Cpu, int]]:
        """The other CPUs, most trials first."""
        rest = [(c, n) for c, n in self.trials.items() if c != self.reference]
        return sorted(rest, key=lambda item: (-item[1], item[0]))

    def line(self) -> str:
        """One line: the CPU compared, why, the others with their trial counts, how to see them."""
        ref = self.reference
        others = "; ".join(f"{c.label} [--cpu {c.id}]: {n} trial{'' if n == 1 else 's'}"
                           for c, n in self.others)
        return (f"latencies compared only among the {self.trials.get(ref, 0)} trials timed on "
                f"{ref.label} [--cpu {ref.id}] ({self.why}); not compared with them: {others}; "
                "see another CPU's front with --cpu <id>")

    def to_dict(self) -> dict[str, Any]:
        """The view as data (``quantuna show --format json``)."""
        return {"reference": {"id": self.reference.id, "label": self.reference.label},
                "why": self.why, "fp32_ms": self.fp32_ms,
                "cpus": [{"id": c.id, "label": c.label, "trials": n,
                          "reference": c == self.reference}
                         for c, n in sorted(self.trials.items(), key=lambda i: (-i[1], i[0]))],
                "note": self.line() if self.mixed else ""}


def find_cpu(query: str, cpus: Iterable[Cpu]) -> Cpu:
    """The CPU ``query`` names: its id (or a prefix of it), or a part of its label.

    Raises:
        SpecError: it names none or several (an input error: exit 2), listing the CPUs.
    """
    known = sorted(set(cpus))
    q = query.strip().lower()
    hits = [c for c in known if c.id.startswith(q)] or [c for c in known if q and q in c.label.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = "; ".join(f"{c.id}: {c.label}" for c in known) or "none (no trial has a latency)"
    what = "matches several CPUs" if hits else "names no CPU that timed a trial"
    raise SpecError(f"--cpu {query!r} {what}; the study's CPUs: {listing}")


def choose(trials: Mapping[Cpu, int], *, asked: str | None = None, confirmed: Cpu | None = None,
           here: Cpu | None = None, baseline: Cpu | None = None) -> tuple[Cpu, str] | None:
    """The reference CPU and the rule that chose it (module docs); None when no trial has one."""
    if asked is not None:
        return find_cpu(asked, trials), "chosen with --cpu"
    if not trials:
        return None
    if confirmed is not None:
        return confirmed, "the CPU the confirm phase ran on"
    if here is not None and here in trials:
        return here, "this host's CPU"
    most = max(trials.values())
    tied = sorted(c for c, n in trials.items() if n == most)
    chosen = baseline if baseline in tied else tied[0]
    return chosen, "the CPU that timed the most trials"


def view_of(trials: Iterable[Any], baseline: Mapping[str, Any], confirmed: Mapping[str, Any] | None,
            confirm_cpu: Cpu | None, *, asked: str | None, threads: int | None,
            latency: str = "performance") -> CpuView | None:
    """The :class:`CpuView` of a study's results (``trials``: TrialResult records, each with
    its ``cpu``); None when no trial has a latency timed on a known CPU."""
    trials = list(trials)
    counts: dict[Cpu, int] = {}
    for t in trials:
        if t.cpu is not None and t.latency is not None:
            counts[t.cpu] = counts.get(t.cpu, 0) + 1
    baseline_cpu = cpu_of(baseline, threads)
    if baseline_cpu is None and len(counts) == 1:  # an older baseline without host facts
        baseline_cpu = next(iter(counts))
    chosen = choose(counts, asked=asked, confirmed=confirm_cpu if confirm_cpu in counts else None,
                    here=cpu_of(attrs.host_facts(), threads), baseline=baseline_cpu)
    if chosen is None:
        return None
    reference, why = chosen
    references = [float(t.latency["fp32_ms"]) for t in trials
                  if t.cpu == reference and t.latency and t.latency.get("fp32_ms")]
    fp32_ms = fp32_ms_on(reference, confirmed=confirm_cpu,
                         confirmed_ms=((confirmed or {}).get("fp32") or {}).get("ms"),
                         baseline=baseline_cpu,
                         baseline_ms=(baseline.get("values") or {}).get(latency),
                         references=references)
    return CpuView(reference, why, counts, fp32_ms)


def fp32_ms_on(cpu: Cpu, *, confirmed: Cpu | None, confirmed_ms: float | None,
               baseline: Cpu | None, baseline_ms: float | None,
               references: Iterable[float]) -> float | None:
    """fp32's latency on ``cpu``: the confirm phase's, the baseline's, or the median of the fp32
    sessions the trials timed on it were interleaved with (``references``)."""
    if cpu == confirmed and confirmed_ms is not None:
        return confirmed_ms
    if cpu == baseline and baseline_ms is not None:
        return baseline_ms
    values = list(references)
    return statistics.median(values) if values else None
