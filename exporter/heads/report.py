"""The evaluation report of a trained head: JSON for tools, PNG figures for people (matplotlib)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tagger.fsutil import atomic_write_bytes


def write_report(folder: Path, report: dict, confusion: np.ndarray | None, labels: list[str]) -> list[Path]:
    """report.json, confusion.png (exclusive fields) and reliability.png; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    path = folder / "report.json"
    atomic_write_bytes(path, (json.dumps(report, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    written.append(path)
    if confusion is not None and len(labels):
        size = max(4.0, 0.45 * len(labels) + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        shown = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")
        ax.set_xlabel("predicted (held out)")
        ax.set_ylabel("user's value")
        ax.set_title(f"{report['field']}: confusion, {report['split']['kind']} split")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        path = folder / "confusion.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    points = report.get("reliability") or []
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    if points:
        ax.plot([p["confidence"] for p in points], [p["accuracy"] for p in points], marker="o")
        for p in points:
            ax.annotate(str(p["count"]), (p["confidence"], p["accuracy"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("head's confidence (held out)")
    ax.set_ylabel("fraction correct")
    ax.set_title(f"{report['field']}: reliability")
    fig.tight_layout()
    path = folder / "reliability.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
