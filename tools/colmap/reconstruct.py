"""Incremental mapping (pycolmap) on a COLMAP database, with the statistics that the strek and SIFT runs are
compared on, and optional checks for CI.

    python3 tools/colmap/reconstruct.py DATABASE IMAGES [--out DIR] [--min-registered N] [--max-reprojection PX]

Prints one line per statistic and a JSON line; exits 1 when a check fails.
"""

import argparse
import json
import sqlite3
import sys
import tempfile
import time

import pycolmap


def map_database(database, images, out, min_matches=15, seed=0):
    """Runs COLMAP's incremental mapper; returns (largest reconstruction or None, all models, seconds)."""
    options = pycolmap.IncrementalPipelineOptions()
    options.min_num_matches = min_matches
    options.random_seed = seed
    options.num_threads = 2
    start = time.perf_counter()
    models = pycolmap.incremental_mapping(str(database), str(images), str(out), options=options)
    seconds = time.perf_counter() - start
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    return best, models, seconds


def verified_pairs(database):
    """Pairs whose two-view geometry kept inliers (COLMAP's own count includes the failed ones)."""
    with sqlite3.connect(str(database)) as connection:
        return connection.execute("SELECT COUNT(*) FROM two_view_geometries WHERE rows > 0").fetchone()[0]


def statistics(database, best, models, seconds):
    """What the note reports: images, registered images, points, track length, reprojection error."""
    db = pycolmap.Database.open(str(database))
    stats = {
        "images": db.num_images(),
        "keypoints_per_image": db.num_keypoints() / max(db.num_images(), 1),
        "matched_pairs": db.num_matched_image_pairs(),
        "verified_pairs": verified_pairs(database),
        "inlier_matches": db.num_inlier_matches(),
        "models": len(models),
        "registered": best.num_reg_images() if best else 0,
        "points3D": best.num_points3D() if best else 0,
        "mean_track_length": best.compute_mean_track_length() if best else 0.0,
        "mean_observations_per_image": best.compute_mean_observations_per_reg_image() if best else 0.0,
        "mean_reprojection_error": best.compute_mean_reprojection_error() if best else float("nan"),
        "mapping_seconds": seconds,
    }
    if best:
        camera = next(iter(best.cameras.values()))
        stats["camera"] = f"{camera.model.name} {', '.join(f'{p:.2f}' for p in camera.params)}"
    db.close()
    return stats


def residuals_by_scale(database, best):
    """Reprojection residuals (projection minus keypoint, px) of the model's observations, grouped by the keypoint's
    scale (the square root of its affine frame's determinant; strek's pyramid level) and all together: count, mean and
    rms per axis, and the mean, median and share over 2 px of their length (a heavy tail means wrong matches that
    the verification kept; a wide body, keypoints that are not localised)."""
    import numpy as np

    scales = {}
    with sqlite3.connect(str(database)) as connection:
        for image_id, rows, cols, data in connection.execute("SELECT image_id, rows, cols, data FROM keypoints"):
            a = np.frombuffer(data, dtype=np.float32).reshape(rows, cols)
            scales[image_id] = np.sqrt(np.abs(a[:, 2] * a[:, 5] - a[:, 3] * a[:, 4])) if cols == 6 else np.ones(rows)
    groups = {}
    for point in best.points3D.values():
        for element in point.track.elements:
            image = best.images[element.image_id]
            pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
            projected = np.asarray(best.cameras[image.camera_id].img_from_cam(pose * point.xyz)).ravel()[:2]
            scale = round(float(scales[element.image_id][element.point2D_idx]), 2)
            groups.setdefault(scale, []).append(projected - image.points2D[element.point2D_idx].xy)
    groups["all"] = [r for scale in list(groups) for r in groups[scale]]
    for scale in sorted(groups, key=lambda s: (s == "all", s)):
        r = np.array(groups[scale])
        mean, rms, norm = r.mean(0), np.sqrt((r**2).mean(0)), np.linalg.norm(r, axis=1)
        print(f"scale {scale}: {len(r)} observations, mean residual {mean[0]:.3f}, {mean[1]:.3f}, rms {rms[0]:.2f}, "
              f"{rms[1]:.2f}; |residual| mean {norm.mean():.3f}, median {np.median(norm):.3f}, "
              f"over 2 px {(norm > 2).mean():.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database")
    parser.add_argument("images", help="the folder that the database's image names are relative to")
    parser.add_argument("--out", help="where the models go [default: a temporary folder]")
    parser.add_argument("--min-matches", type=int, default=15, help="mapper's minimum verified matches per pair")
    parser.add_argument("--min-registered", type=int, help="fail when the largest model registers fewer images")
    parser.add_argument("--max-reprojection", type=float, help="fail when its mean reprojection error is larger (px)")
    parser.add_argument("--min-points", type=int, help="fail when it has fewer 3D points")
    parser.add_argument("--label", default="", help="name printed with the JSON line")
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's log")
    parser.add_argument("--by-scale", action="store_true", help="also print the residuals grouped by keypoint scale")
    args = parser.parse_args()
    if not args.verbose:
        pycolmap.logging.minloglevel = 1  # warnings and errors only

    with tempfile.TemporaryDirectory() as tmp:
        best, models, seconds = map_database(args.database, args.images, args.out or tmp, args.min_matches)
        stats = statistics(args.database, best, models, seconds)
        if args.by_scale and best:
            residuals_by_scale(args.database, best)
    for key, value in stats.items():
        print(f"{key:>28}: {value:.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    print(json.dumps({"label": args.label, **stats}))

    failures = []
    if args.min_registered is not None and stats["registered"] < args.min_registered:
        failures.append(f"registered {stats['registered']} images, expected at least {args.min_registered}")
    if args.max_reprojection is not None and not stats["mean_reprojection_error"] <= args.max_reprojection:
        failures.append(
            f"mean reprojection error {stats['mean_reprojection_error']:.3f} px, expected at most {args.max_reprojection}"
        )
    if args.min_points is not None and stats["points3D"] < args.min_points:
        failures.append(f"{stats['points3D']} 3D points, expected at least {args.min_points}")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
