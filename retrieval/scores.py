"""Scores made comparable: each stage's scores mapped onto 0..1 over the candidates before they are combined."""


def min_max(scores: list[float]) -> list[float]:
    low, high = min(scores), max(scores)
    if high == low:
        return [0.5] * len(scores)
    return [(s - low) / (high - low) for s in scores]
