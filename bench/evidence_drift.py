"""How fast the evidence monitor sees a fall in agreement, and how often it cries wolf.

Simulated traffic at one trust: `--per-day` chest CTs a day (40), a share `--prevalence` (0.30) with
an actionable nodule by the radiologist's report; the AI agrees with sensitivity 0.90 and
specificity 0.85 until `--change-day`, then one of them falls by `--drop` (3 points). Each day the
monitor's own rule (`pathways.concordance.low_agreement`: the one-sided 95 % Wilson upper bound
over the last `--window` days below the spec's minimum, from `--min-cases` studies) decides. For
each minimum tried it reports the detection delay after the fall (median and 90th percentile over
`--runs` simulations; share detected within 14 days) and the false alerts per model-year in the
steady state (an alert episode is a run of alerting days; the monitor runs daily).

The issue's reference point: a published monitoring framework for a pulmonary-embolism AI (about
12,000 CTPAs) flagged drift when the daily discrepancy rate left its 95 % interval for 7
consecutive days, and showed a 2-3 % fall in specificity doubling or tripling the discrepancy
rate. Nothing here is a timed test; run `python bench/evidence_drift.py`.
"""

from __future__ import annotations

import argparse

import numpy as np

from pathways.concordance import VersionConcordance, low_agreement


def _window_rows(daily: np.ndarray, window: int) -> np.ndarray:
    """Rolling sums over `window` days of per-day (tp, fn, tn, fp) counts."""
    cumulative = np.cumsum(daily, axis=0)
    shifted = np.vstack([np.zeros((window, 4)), cumulative[:-window]])
    return cumulative - shifted[: len(cumulative)]


def _traffic(rng: np.random.Generator, days: int, per_day: int, prevalence: float, sens: np.ndarray,
             spec: np.ndarray) -> np.ndarray:
    positives = rng.binomial(per_day, prevalence, size=days)
    tp = rng.binomial(positives, sens)
    tn = rng.binomial(per_day - positives, spec)
    return np.stack([tp, positives - tp, tn, per_day - positives - tn], axis=1).astype(float)


def _alerting(rows: np.ndarray, measure: str, minimum: float, min_cases: int) -> np.ndarray:
    flags = []
    for tp, fn, tn, fp in rows.astype(int):
        row = VersionConcordance("lung-cancer-ct", "bench", "RXX01", tp, fp, fn, tn, 0, 0, 0)
        found = low_agreement([row], min_cases=min_cases,
                              min_sensitivity=minimum if measure == "sensitivity" else None,
                              min_specificity=minimum if measure == "specificity" else None)
        flags.append(bool(found))
    return np.array(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=int, default=40)
    parser.add_argument("--prevalence", type=float, default=0.30)
    parser.add_argument("--sensitivity", type=float, default=0.90)
    parser.add_argument("--specificity", type=float, default=0.85)
    parser.add_argument("--drop", type=float, default=0.03)
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--min-cases", type=int, default=30)
    parser.add_argument("--change-day", type=int, default=60)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--steady-years", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.per_day} chest CTs/day, prevalence {args.prevalence:.0%}, sensitivity {args.sensitivity:.2f}, "
          f"specificity {args.specificity:.2f}, fall of {args.drop * 100:.0f} points on day {args.change_day}, "
          f"window {args.window} d, min cases {args.min_cases}, {args.runs} runs")
    print("measure      minimum  delay median  delay p90  detected<=14 d  false alerts/model-year")
    for measure, baseline in (("sensitivity", args.sensitivity), ("specificity", args.specificity)):
        for margin in (0.005, 0.01, 0.015, 0.02):
            minimum = round(baseline - margin, 3)
            delays = []
            days = args.change_day + 120
            for _ in range(args.runs):
                values = np.full(days, baseline)
                values[args.change_day:] -= args.drop
                sens = values if measure == "sensitivity" else np.full(days, args.sensitivity)
                spec = values if measure == "specificity" else np.full(days, args.specificity)
                rows = _window_rows(_traffic(rng, days, args.per_day, args.prevalence, sens, spec), args.window)
                flags = _alerting(rows, measure, minimum, args.min_cases)
                after = np.flatnonzero(flags[args.change_day:])
                delays.append(float(after[0]) if after.size else float("inf"))
            steady_days = 365 * args.steady_years
            rows = _window_rows(_traffic(rng, steady_days, args.per_day, args.prevalence,
                                         np.full(steady_days, args.sensitivity), np.full(steady_days, args.specificity)),
                                args.window)
            flags = _alerting(rows, measure, minimum, args.min_cases)[args.window:]
            episodes = int(flags[0]) + int(np.sum(flags[1:] & ~flags[:-1]))
            ordered = np.sort(np.array(delays))
            median, p90 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            print(f"{measure:12} {minimum:7.3f}  {median:12.0f}  {p90:9.0f}"
                  f"  {np.mean(ordered <= 14):14.0%}  {episodes / args.steady_years:23.1f}")


if __name__ == "__main__":
    main()
