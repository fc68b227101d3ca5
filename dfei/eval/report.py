"""Human-readable tables of per-domain metrics."""
from __future__ import annotations

import math


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def domain_table(splits: dict[str, dict]) -> str:
    """Markdown table: one row per domain (+ avg), columns n / AUC / logloss [/ GAUC] per split."""
    names = list(next(iter(splits.values()))["domains"])
    has_gauc = any("gauc" in m for s in splits.values() for m in s["domains"].values())
    header = ["domain"]
    for split in splits:
        header += [f"{split} n", f"{split} AUC", f"{split} logloss"] + ([f"{split} GAUC"] if has_gauc else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        row = [name]
        for split in splits.values():
            m = split["domains"][name]
            row += [f"{m['n']:,}", _fmt(m["auc"]), _fmt(m["logloss"])] + ([_fmt(m.get("gauc"))] if has_gauc else [])
        lines.append("| " + " | ".join(row) + " |")
    avg = ["**avg**"]
    for split in splits.values():
        avg += ["", f"**{_fmt(split['avg_auc'])}**", ""] + ([""] if has_gauc else [])
    lines.append("| " + " | ".join(avg) + " |")
    return "\n".join(lines)
