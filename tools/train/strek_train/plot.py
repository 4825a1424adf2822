"""Training curves: `python3 -m strek_train.plot RUN/log.csv [RUN2/log.csv] -o weights/training_curves.png`.

One row of panels per argument; `A/log.csv+B/log.csv` draws a run B initialised from run A (`--init`) after it,
B's steps counted on from A's last step, with a line where B starts."""
from __future__ import annotations

import argparse
import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = {
    "detector": [("reward", "mean reward per counted draw"), ("points", "sampled keypoints per view"),
                 ("repeated", "repeated share of visible draws"), ("val_rep3", "validation rep@3 (top-k, NMS)")],
    "descriptor": [("loss", "loss (triplet or InfoNCE)"), ("active", "violated triplets / wrong top-1 (InfoNCE)"),
                   ("pos_dist", "positive distance"), ("val_mma3", "validation mma@3 (mutual NN)")],
}


def read(path: str) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k != "step" and v not in ("", None):
                    series.setdefault(k, []).append((int(row["step"]), float(v)))
    return series


def read_chain(arg: str) -> tuple[dict[str, list[tuple[int, float]]], list[int]]:
    """The series of `A+B+...` with each later run's steps offset by the previous ones; the steps where runs start."""
    merged: dict[str, list[tuple[int, float]]] = {}
    offset, starts = 0, []
    for path in arg.split("+"):
        series = read(path)
        if starts:
            starts.append(offset)
        else:
            starts.append(0)
        last = 0
        for key, points in series.items():
            merged.setdefault(key, []).extend((offset + step, v) for step, v in points)
            last = max([last] + [step for step, _ in points])
        offset += last
    return merged, starts[1:]


def smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python3 -m strek_train.plot", description=__doc__)
    p.add_argument("logs", nargs="+", help="log.csv of a detector run, then optionally of a descriptor run; "
                                           "A/log.csv+B/log.csv for a run B fine-tuned from A")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--smooth", type=int, default=20, help="moving average window (log rows) of training metrics")
    args = p.parse_args(argv)
    runs = []
    for path in args.logs:
        series, starts = read_chain(path)
        runs.append(("detector" if "reward" in series else "descriptor", path, series, starts))
    fig, axes = plt.subplots(len(runs), 4, figsize=(16, 3.6 * len(runs)), squeeze=False)
    for row, (stage, path, series, starts) in enumerate(runs):
        for col, (key, title) in enumerate(PANELS[stage]):
            ax = axes[row][col]
            is_val = key.startswith("val_")
            # Validation panels also draw the held-out sets under camera-like changes and at full resolution.
            variants = [(key, "basic")] + ([(key + "_real", "real"), (key + "_hires", "hires")] if is_val else [])
            drawn = 0
            for name, label in variants:
                pts = series.get(name, [])
                if pts:
                    steps, values = zip(*pts)
                    ax.plot(steps, values if is_val else smooth(list(values), args.smooth),
                            marker="o" if is_val else None, markersize=3, label=label)
                    drawn += 1
            if drawn > 1:
                ax.legend(fontsize=8)
            for start in starts:
                ax.axvline(start, color="grey", linestyle="--", linewidth=1)
            ax.set_title(f"{stage}: {title}", fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    fig.suptitle(" | ".join(path for _, path, _, _ in runs), fontsize=9)
    fig.tight_layout()
    fig.savefig(args.output, dpi=80)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
