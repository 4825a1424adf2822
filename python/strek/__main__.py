"""`python -m strek extract DIR -o features.h5`: features of an image folder in hloc's layout (strek.hloc).

Images already in the file are skipped (so an interrupted run resumes); a file that cannot be read is reported
and the run goes on; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import sys
import time

import h5py

from . import Session, StrekError, list_images
from . import hloc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strek", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    extract = sub.add_parser("extract", help="features of an image folder into an hloc features.h5")
    extract.add_argument("images", help="image folder")
    extract.add_argument("-o", "--out", required=True, help="features file (.h5); images already in it are skipped")
    extract.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    extract.add_argument("--weights", help=".safetensors file (default: the shipped weights)")
    extract.add_argument("--max-keypoints", type=int)
    extract.add_argument("--scales", type=lambda v: [float(s) for s in v.split(",")],
                         help="pyramid scales instead of the weights' own, e.g. 1,2,1.414,0.707,0.5,0.354,0.25 "
                              "(levels above 1 upsample: finer keypoints, more work)")
    extract.add_argument("-r", "--recursive", action="store_true", help="descend into subfolders")
    args = parser.parse_args(argv)
    try:
        return extract_folder(args)
    except StrekError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def extract_folder(args) -> int:
    images = list_images(args.images, args.recursive)
    session = Session(args.device, args.weights, args.max_keypoints, scales=args.scales)
    print(f"{len(images)} images; {session.device}", file=sys.stderr)
    written, failed, start = 0, 0, time.monotonic()
    with h5py.File(args.out, "a") as h5:
        todo = [(name, path) for name, path in images if name not in h5]
        for k, (name, path) in enumerate(todo):
            try:
                features = session.extract(path)
            except StrekError as e:
                print(f"failed: {e}", file=sys.stderr)
                failed += 1
                continue
            hloc.write(h5, name, features)
            h5.flush()
            written += 1
            if (k + 1) % 50 == 0:
                rate = (k + 1) / (time.monotonic() - start)
                print(f"{k + 1}/{len(todo)} ({rate:.1f} images/s, about {(len(todo) - k - 1) / rate:.0f} s left)",
                      file=sys.stderr)
    print(f"{written} written, {len(images) - len(todo)} skipped (already in {args.out}), {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
