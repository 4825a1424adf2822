"""The baseline for `strek colmap`: COLMAP's own SIFT (extraction, matching, geometric verification, through
pycolmap) on the same frames, then the same mapping and statistics as tools/colmap/reconstruct.py.

    python3 tools/colmap/sift.py IMAGES [--camera pinhole:fx,fy,cx,cy] [--max-features N] [--pairs exhaustive]

The camera flag takes strek's pixel convention (the centre of pixel (0,0) at (0,0), as OpenCV and the TUM
calibration give it) and adds 0.5 to the principal point for COLMAP, exactly as `strek colmap --camera` does.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import pycolmap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reconstruct import map_database, statistics  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images")
    parser.add_argument("--camera", help="pinhole:fx,fy,cx,cy in strek's pixel convention [default: COLMAP's guess]")
    parser.add_argument("--max-features", type=int, default=8192, help="SIFT keypoints per image (COLMAP's default)")
    parser.add_argument("--pairs", default="exhaustive", help="exhaustive or sequential:N")
    parser.add_argument("--out", help="folder for the database and models [default: a temporary folder]")
    parser.add_argument("--label", default="sift")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        os.makedirs(out, exist_ok=True)
        database = os.path.join(out, "sift.db")
        if os.path.exists(database):
            os.remove(database)
        reader = pycolmap.ImageReaderOptions()
        if args.camera:
            model, _, values = args.camera.partition(":")
            if model != "pinhole":
                parser.error("only pinhole:fx,fy,cx,cy is supported")
            fx, fy, cx, cy = (float(v) for v in values.split(","))
            reader.camera_model = "PINHOLE"
            reader.camera_params = f"{fx},{fy},{cx + 0.5},{cy + 0.5}"
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.sift.max_num_features = args.max_features
        extraction.num_threads = 2
        start = time.perf_counter()
        pycolmap.extract_features(
            database, args.images, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
            extraction_options=extraction, device=pycolmap.Device.cpu,
        )
        extract_seconds = time.perf_counter() - start
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = 2
        start = time.perf_counter()
        if args.pairs == "exhaustive":
            pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
        elif args.pairs.startswith("sequential:"):
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = int(args.pairs.split(":")[1])
            pairing.quadratic_overlap = False
            pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
        else:
            parser.error("--pairs: exhaustive or sequential:N")
        match_seconds = time.perf_counter() - start
        best, models, seconds = map_database(database, args.images, os.path.join(out, "sparse"))
        stats = statistics(database, best, models, seconds)
    stats = {"extraction_seconds": extract_seconds, "matching_seconds": match_seconds, **stats}
    for key, value in stats.items():
        print(f"{key:>28}: {value:.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    print(json.dumps({"label": args.label, **stats}))


if __name__ == "__main__":
    main()
