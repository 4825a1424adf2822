"""Images per second of extraction: the CLI, and strek.ray with 1 and 2 workers, in one run on one machine.

    python3 tools/ray/bench.py IMAGES [--repeat 4] [--device cpu]

IMAGES is copied `--repeat` times into a temporary folder (so that a small folder makes a longer run). Each Ray run
starts from an empty work folder on a fresh local Ray instance; its time is strek.ray.extract's (actors started,
weights loaded, every shard written), not Ray's own start. Prints a Markdown table.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

import strek
import strek.ray

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the machine given to Ray")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        sources = [Path(p) for _, p in strek.list_images(args.images)]
        for r in range(args.repeat):
            for p in sources:
                shutil.copy(p, folder / f"{r}-{p.name}")
        n = len(sources) * args.repeat
        rows = []
        start = time.monotonic()
        subprocess.run(["cargo", "run", "--release", "--quiet", "--", "--device", args.device, "extract", str(folder),
                        "-o", str(tmp / "cli")], cwd=REPO, check=True, capture_output=True)
        rows.append(("strek extract (CLI)", time.monotonic() - start))
        for workers in (1, 2):
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            result = strek.ray.extract(str(folder), str(tmp / f"ray{workers}"), workers=workers,
                                       cpus_per_worker=args.cpus / workers, shard_size=8, device=args.device,
                                       log=lambda line: None)
            ray.shutdown()
            rows.append((f"strek.ray, {workers} worker(s) x {args.cpus // workers} CPU", result["seconds"]))
        print(f"{n} images from {args.images}, device {args.device}")
        print("| run | seconds | images/s |\n|---|---:|---:|")
        for name, seconds in rows:
            print(f"| {name} | {seconds:.1f} | {n / seconds:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
