"""Figure 2: what the range cache saves on the ResNet-18-shaped study.

The space is ``studies/resnet18_like.yaml``'s with five calibration settings: MinMax, Entropy
and Percentile at 99.9, 99.99 and 99.999. ``--trials`` distinct configs are drawn (seeded) so that
each setting appears equally often, and run twice as enqueued trials of fresh studies:

- **with the cache**: quantuna as shipped; a setting is calibrated by its first trial and its
  ranges are reused by the others (5 calibrations);
- **without**: the range cache directory is emptied after every trial, so every trial calibrates.

The figure is mean trial time without / with the cache (wall time between Optuna's trial
callbacks), per round and its median; the calibrate step alone (the trials' ``seconds.calibrate``
attr) is reported too. Rounds alternate which mode runs first. It is measured with the study's
32 calibration images and with 128 (``--images``), since the share of calibration in a trial
grows with the calibration set.

    python studies/benchmarks/calibration_reuse.py [--trials 15] [--rounds 2] [--images 32 128]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SETTINGS = {"calibrate_method": ["MinMax", "Entropy", "Percentile"], "percentile": [99.9, 99.99, 99.999]}


def pick_configs(session: Any, count: int, seed: int = 0) -> list[Any]:
    """``count`` distinct int8 configs, cycling through the calibration settings."""
    by_setting: dict[str, list[Any]] = {}
    for c in session.space.distinct_configs():
        if c.approach == "static":
            key = f"{c.calibrate_method}-{c.percentile}"
            by_setting.setdefault(key, []).append(c)
    rng = random.Random(seed)
    for pool in by_setting.values():
        pool.sort(key=lambda c: c.key())
        rng.shuffle(pool)
    settings = sorted(by_setting)
    order = [by_setting[settings[i % len(settings)]].pop() for i in range(count)]
    rng.shuffle(order)
    return order


def measure(images: int, trials: int, rounds: int) -> dict[str, Any]:
    """Both modes over ``rounds`` rounds with ``images`` calibration images."""
    sys.path.insert(0, str(C.STUDIES))
    import resnet18_like as R

    from quantuna.study.session import prepare

    batches = list(R.calibration_batches(count=images))
    ratios, calib_ratios = [], []
    means: dict[str, list[float]] = {"with": [], "without": []}
    with C.scratch("calibration-reuse-") as tmp:
        session = prepare(C.bench_spec(C.RESNET_SPEC, tmp / "probe", **SETTINGS), calibration=batches)
        settings = {(c.calibrate_method, c.percentile) for c in session.space.distinct_configs()
                    if c.approach == "static"}
        configs = pick_configs(session, trials)
        C.say(f"space: {len(session.space.distinct_configs())} configs, {len(settings)} calibration "
              f"settings; {len(configs)} trials per run; {images} calibration images")
        for r in range(rounds):
            modes = ["with", "without"] if r % 2 == 0 else ["without", "with"]
            got: dict[str, tuple[float, float]] = {}
            for mode in modes:
                spec = C.bench_spec(C.RESNET_SPEC, tmp / f"{mode}-{r}", **SETTINGS)
                durations, done = C.run_configs(spec, configs, forget_ranges=(mode == "without"),
                                                calibration=batches)
                calibrate = [t.user_attrs.get("seconds", {}).get("calibrate", 0.0) for t in done]
                reused = sum(bool(t.user_attrs.get("calibration_reused")) for t in done)
                got[mode] = (C.mean(durations), C.mean(calibrate))
                means[mode].append(C.mean(durations))
                C.say(f"  {images} images, round {r + 1}, {mode} cache: {C.mean(durations):.2f} s/trial, "
                      f"calibrate {C.mean(calibrate):.2f} s/trial, {len(done) - reused} calibrations")
            ratios.append(got["without"][0] / got["with"][0])
            calib_ratios.append(got["without"][1] / max(got["with"][1], 1e-9))
    return {"images": images, "configs": len(configs), "ratios": ratios, "ratio": C.median(ratios),
            "calibrate": C.median(calib_ratios), "without": C.mean(means["without"]),
            "with": C.mean(means["with"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, nargs="+", default=[32, 128],
                        help="calibration set sizes (the study uses 32)")
    args = parser.parse_args()
    C.quiet()
    rows = []
    for images in args.images:
        r = measure(images, args.trials, args.rounds)
        C.say(f"calibration reuse ({images} calibration images): trials {r['ratio']:.2f}x cheaper with the "
              f"range cache ({r['without']:.2f} s vs {r['with']:.2f} s per trial); calibrate step "
              f"{r['calibrate']:.1f}x cheaper")
        rows.append([
            f"{images}" + (" (the study's)" if images == R_IMAGES else ""), r["configs"], args.rounds,
            f"{r['without']:.2f}", f"{r['with']:.2f}",
            f"**{r['ratio']:.2f}x** ({', '.join(f'{x:.2f}x' for x in r['ratios'])})",
            f"{r['calibrate']:.1f}x", ">= 3x",
        ])
    body = (
        "`studies/resnet18_like.yaml`'s space with 5 calibration settings (MinMax, Entropy, "
        "Percentile 99.9/99.99/99.999). Mean wall time per trial for the same seeded configs "
        "(each setting equally often), with quantuna's range cache and with the cache emptied "
        "after every trial; no trial is stopped early (the benchmark loosens the accuracy "
        "criterion), so every trial evaluates all 128 images and runs the latency loop. Median over rounds (per-round values in brackets); the calibrate "
        "column is the trials' `seconds.calibrate` alone."
        " The cache saves only the calibrate step (at most trials / settings = 3x here); the evaluation and the latency loop are paid by every trial, so the trial ratio is bounded by the calibrate step's share of a trial, which grows with the calibration set.\n\n"
        + C.table(["calibration images", "trials", "rounds", "s/trial without cache",
                   "s/trial with cache", "trials cheaper", "calibrate step cheaper", "target"], rows)
    )
    C.update_results("calibration_reuse", "2. Calibration reuse (range cache)", body)


R_IMAGES = 32

if __name__ == "__main__":
    main()
