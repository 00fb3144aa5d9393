"""Plots of an experiment stage's summary (hard negatives, inverted U): saved in the run folder,
embedded in the leaderboard's HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def figures(summary: dict[str, Any], title: str = "") -> dict[str, Any]:
    """Matplotlib figures of an experiment summary: "hard_negatives" (accuracy vs m per source) and
    "inverted_u" (accuracy vs k, both orders). The run folder saves them; the leaderboard embeds them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, Any] = {}
    label = summary["metric"]
    if "negatives" in summary:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for source, row in summary["negatives"].items():
            ms = sorted(int(m) for m in row)
            acc = [row[str(m)]["acc"] for m in ms]
            se = [row[str(m)]["se"] for m in ms]
            ax.errorbar(ms, acc, yerr=se, marker="o", capsize=3, label=source)
        ax.set(xlabel="hard negatives read with the gold passage (m)", ylabel=label,
               title=f"{title} hard-negative degradation (n={summary['with_gold']})".strip())
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out["hard_negatives"] = fig
    if "curve" in summary:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for name, order in summary["curve"]["orders"].items():
            ks = sorted(int(k) for k in order["acc"])
            ax.errorbar(ks, [order["acc"][str(k)]["acc"] for k in ks], yerr=[order["acc"][str(k)]["se"] for k in ks],
                        marker="o", capsize=3,
                        label=f"{'reordered (both ends)' if name == 'reordered' else 'score order'}, "
                              f"k*={order['k_star']}")
        ax.set_xscale("log")
        ax.set(xlabel=f"passages read (top-k of {summary['curve']['source']})", ylabel=label,
               title=f"{title} accuracy vs retrieved passages (n={summary['queries']})".strip())
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out["inverted_u"] = fig
    return out


def plot(summary: dict[str, Any], folder: Path, title: str = "") -> list[Path]:
    """hard_negatives.png and inverted_u.png in the run folder."""
    made = figures(summary, title)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    written = []
    for name, fig in made.items():
        written.append(folder / f"{name}.png")
        fig.savefig(written[-1])
        plt.close(fig)
    return written
