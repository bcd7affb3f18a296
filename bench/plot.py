"""Line plots of CPU per record against batch size, record size and shard count.

Run with bench/.venv-peers/bin/python (it has matplotlib): `plot.py results.json out.png`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source: str, target: str) -> None:
    growth = json.loads(Path(source).read_text())["growth"]
    axes_spec = (
        ("batch_size", "batch size"),
        ("record_size", "record size (bytes)"),
        ("shards", "shard count"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, label) in zip(axes, axes_spec, strict=True):
        points = growth[key]
        xs = [int(x) for x in points]
        for consumer in ("sluiceway", "aiobotocore loop"):
            ax.plot(xs, [points[x][consumer] for x in points], marker="o", label=consumer)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("consumer CPU µs per record")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Cost growth on kinesalite (no-op handler)")
    fig.tight_layout()
    fig.savefig(target, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
