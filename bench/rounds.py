"""The rounds of a bench/compare-*.sh run: each round writes one JSON file; the summary is the
median of every number and the median of the per-round ratios (the machine is shared and
noisy, so a ratio is only taken between numbers measured in the same round)."""
import json
import statistics


def load(pattern, n):
    """The rounds' results, from pattern.format(r) for r in 1..=n (a missing round is said)."""
    rounds = []
    for r in range(1, n + 1):
        try:
            with open(pattern.format(r)) as f:
                rounds.append(json.load(f))
        except (OSError, ValueError):
            print(f"round {r}: no result")
    return rounds


def median(rounds, get):
    """The median of get(round)."""
    return statistics.median(get(r) for r in rounds)


def ratio(rounds, num, den):
    """The median over rounds of num(round) / den(round), or None when no round has den > 0."""
    ratios = [num(r) / den(r) for r in rounds if den(r) > 0]
    return statistics.median(ratios) if ratios else None
