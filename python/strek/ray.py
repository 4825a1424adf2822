"""Extraction and matching of image collections larger than one machine, on Ray, into one COLMAP database.

    python -m strek.ray extract IMAGES -o WORK [--workers N] [--gpus-per-worker G]   (a folder, or a list of paths)
    python -m strek.ray match WORK [--pairs exhaustive | sequential:N | PAIRS.txt] [--camera pinhole:fx,fy,cx,cy]
    python -m strek.ray colmap IMAGES -o WORK --database DB.db [...]   (all three steps)

Extraction: Ray Data maps shards of the image list (`--shard-size` images, in name order) over a pool of strek
actors, one `Session` each (`num_gpus` per actor when `--gpus-per-worker` is given); each shard's features are
written to WORK/features/shard-NNNNN.h5 (hloc's layout, strek.hloc) by a rename, so a file is whole or absent.
Matching: the pair list in blocks (`--block` pairs) as Ray tasks, each the CPU matcher and `strek colmap`'s
verification (RANSAC seeded by the pair's place in the list), written to WORK/matches/block-NNNNN.npz the same
way. `merge` (part of `colmap`) writes the database in `strek colmap`'s order, so the database equals the CLI's.
Re-running any step skips the shards and blocks already written; Ray retries the work of a worker that died.

The image folder and WORK must be readable (and WORK writable) at the same paths from every node: a shared
filesystem. On a cluster: `ray start --head` on one node, `ray start --address HEAD:6379` on the others, then any
command here with `--address auto` (the default joins a running cluster, else starts a local one).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
import ray

from . import ColmapWriter, Session, StrekError, hloc, list_images, pair_list, verify_pair

__all__ = ["extract", "match", "merge", "colmap", "Work"]

FAILED = 1  # COLMAP's two-view configuration "degenerate": verification failed


class Work:
    """The layout of a work folder: the manifest (inputs and settings), feature shards and match blocks."""

    def __init__(self, root):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.features = self.root / "features"
        self.matches = self.root / "matches"

    def shard_path(self, shard: int) -> Path:
        return self.features / f"shard-{shard:05d}.h5"

    def block_path(self, block: int) -> Path:
        return self.matches / f"block-{block:05d}.npz"

    def start(self, images: list, settings: dict) -> dict:
        """Writes the manifest, or checks that the one there was made for the same images and settings."""
        manifest = {"images": [[name, str(path)] for name, path in images], **settings}
        if self.manifest_path.exists():
            existing = json.loads(self.manifest_path.read_text())
            if existing != manifest:
                raise SystemExit(f"{self.root} holds a run over other images or settings; use another folder")
            return existing
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(self.manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
        return manifest

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            raise SystemExit(f"{self.root} has no manifest: run `python -m strek.ray extract` first")
        return json.loads(self.manifest_path.read_text())

    def shards(self, manifest: dict) -> list:
        """(shard, [(name, path)]) in order."""
        images, size = manifest["images"], manifest["shard_size"]
        return [(s, images[k:k + size]) for s, k in enumerate(range(0, len(images), size))]


def write_atomically(path: Path, write) -> None:
    """`write(tmp)` then a rename: readers see the whole file or none (also after a crash mid-write)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# --- extraction ------------------------------------------------------------------------------------------------

class ShardExtractor:
    """A Ray Data actor: one strek session, extracting whole shards."""

    def __init__(self, work: str, device: str, weights: Optional[str], max_keypoints: Optional[int]):
        self.work = Work(work)
        self.manifest = self.work.manifest()
        self.shards = dict(self.work.shards(self.manifest))
        self.session = Session(device, weights, max_keypoints)

    def __call__(self, batch: dict) -> dict:
        done = {"shard": [], "images": [], "failed": []}
        for shard in batch["shard"]:
            shard = int(shard)
            written, failed = self.extract_shard(shard)
            done["shard"].append(shard)
            done["images"].append(written)
            done["failed"].append(json.dumps(failed))
        return {k: np.asarray(v) for k, v in done.items()}

    def extract_shard(self, shard: int):
        features, failed = [], []
        for k, (name, path) in enumerate(self.shards[shard]):
            try:
                features.append((name, self.session.extract(path)))
            except StrekError as e:
                failed.append([name, str(e)])
            if k == 0:
                _die_once_if_asked()

        def write(tmp: Path) -> None:
            with h5py.File(tmp, "w") as h5:
                for name, f in features:
                    hloc.write(h5, name, f)
                h5.attrs["failed"] = json.dumps(failed)

        write_atomically(self.work.shard_path(shard), write)
        return len(features), failed


def _worker_env(threads: int) -> dict:
    """The actors' environment: the CPU path's threads as many as the actor's CPUs (not the node's)."""
    env = {"RAYON_NUM_THREADS": str(threads)}
    if "STREK_RAY_KILL_ONCE" in os.environ:
        env["STREK_RAY_KILL_ONCE"] = os.environ["STREK_RAY_KILL_ONCE"]
    return env


def _die_once_if_asked() -> None:
    """For the test of worker loss: with STREK_RAY_KILL_ONCE=FILE, the first worker to get here creates FILE and
    kills its own process (SIGKILL, mid-shard); Ray must then redo the shard elsewhere."""
    marker = os.environ.get("STREK_RAY_KILL_ONCE")
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def image_list(images: str, recursive: bool = False) -> list:
    """(name, path) of a folder's images (names relative to it), or of the files a text file lists one per line
    (relative paths from the list's folder; blank lines and `#` comments skipped), named by their paths relative
    to the folder they all share: the folder to give COLMAP's mapper."""
    source = Path(images)
    if source.is_dir():
        return list_images(images, recursive)
    if not source.is_file():
        raise SystemExit(f"{images} is neither an image folder nor a list of image paths")
    paths = [os.path.abspath(source.parent / line.strip()) for line in source.read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    if not paths:
        return []
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    return [(Path(os.path.relpath(p, root)).as_posix(), p) for p in paths]


def extract(images: str, work: str, workers: int = 1, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0,
            shard_size: int = 16, device: str = "auto", weights: Optional[str] = None,
            max_keypoints: Optional[int] = None, recursive: bool = False, log=print) -> dict:
    """Extracts every image of `images` (a folder, or a file listing image paths) into shards under `work`."""
    w = Work(work)
    settings = {"shard_size": shard_size, "weights": weights, "max_keypoints": max_keypoints}
    manifest = w.start(image_list(images, recursive), settings)
    w.features.mkdir(exist_ok=True)
    shards = w.shards(manifest)
    todo = [s for s, _ in shards if not w.shard_path(s).exists()]
    total = len(shards)
    log(f"extract: {len(manifest['images'])} images in {total} shards, {total - len(todo)} already written")
    start, written, failed = time.monotonic(), 0, 0
    if todo:
        threads = max(1, int(cpus_per_worker))
        dataset = ray.data.from_items([{"shard": s} for s in todo]).map_batches(
            ShardExtractor,
            fn_constructor_kwargs={"work": str(w.root), "device": device, "weights": weights,
                                   "max_keypoints": max_keypoints},
            batch_size=1,
            concurrency=workers,
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
            # the CPU path's threads: as many as the actor's CPUs, not the node's
            runtime_env={"env_vars": _worker_env(threads)},
        )  # Ray Data restarts a dead actor and retries its batch (max_restarts and max_task_retries are -1)
        for k, row in enumerate(dataset.iter_rows()):
            written += int(row["images"])
            for _, reason in json.loads(str(row["failed"])):
                failed += 1
                log(f"  failed: {reason}")
            rate = written / max(time.monotonic() - start, 1e-9)
            log(f"  shard {int(row['shard'])} done ({k + 1}/{len(todo)}; {rate:.2f} images/s)")
    seconds = time.monotonic() - start
    log(f"extract: {written} images written, {failed} failed, in {seconds:.1f} s")
    return {"written": written, "failed": failed, "seconds": seconds, "shards": len(todo)}


# --- matching ---------------------------------------------------------------------------------------------------

class FeatureStore:
    """Features of extracted images, read from their shards on demand: `names` in image order, `shard_of` each
    name's shard. `scan` finds them (the driver, once); a task gets only the entries it needs."""

    def __init__(self, work: Work, names: list, shard_of: dict):
        self.work, self.names, self.shard_of = work, names, shard_of
        self.open = {}

    @classmethod
    def scan(cls, work: Work) -> "FeatureStore":
        names, shard_of = [], {}
        for shard, images in work.shards(work.manifest()):
            path = work.shard_path(shard)
            if not path.exists():
                raise SystemExit(f"{path} is missing: run (or finish) `python -m strek.ray extract` first")
            with h5py.File(path, "r") as h5:
                present = set(hloc.names(h5))
            for name, _ in images:
                if name in present:  # failed images are left out, as `strek colmap` leaves them out
                    names.append(name)
                    shard_of[name] = shard
        return cls(work, names, shard_of)

    def __getitem__(self, name: str):
        shard = self.shard_of[name]
        if shard not in self.open:
            self.open[shard] = h5py.File(self.work.shard_path(shard), "r")
        return hloc.read(self.open[shard], name)

    def close(self) -> None:
        for h5 in self.open.values():
            h5.close()


_matcher_session = None


def _matcher() -> Session:
    """The CPU matcher, one per worker process."""
    global _matcher_session
    if _matcher_session is None:
        _matcher_session = Session("cpu")
    return _matcher_session


@ray.remote(max_retries=-1)
def match_block(work: str, block: int, pairs: list, first: int, images: dict, ratio: Optional[float], camera: str,
                min_inliers: int) -> int:
    """Matches and verifies pairs `first ..` of the list and writes them; `images` maps each image index of the
    pairs to its (name, shard), so that the task opens only the shards it needs."""
    w = Work(work)
    store = FeatureStore(w, [], {name: shard for name, shard in images.values()})
    cache = {}

    def features(i):
        if i not in cache:
            cache[i] = store[images[i][0]]
        return cache[i]

    counts, matches, configs, inlier_counts, inliers, fs, es = [], [], [], [], [], [], []
    nan = np.full((3, 3), np.nan)
    for k, (i, j) in enumerate(pairs):
        a, b = features(i), features(j)
        m = _matcher().match(a, b, ratio)
        g = verify_pair(a, b, m, first + k, camera, min_inliers)
        counts.append(len(m))
        matches.append(m)
        configs.append(g["config"])
        inlier_counts.append(len(g["inliers"]))
        inliers.append(g["inliers"])
        fs.append(nan if g["F"] is None else g["F"])
        es.append(nan if g["E"] is None else g["E"])
    store.close()
    empty = np.zeros((0, 2), np.int64)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, pairs=np.asarray(pairs, np.int64).reshape(-1, 2), counts=np.asarray(counts, np.int64),
                     matches=np.concatenate(matches) if matches else empty, config=np.asarray(configs, np.int64),
                     inlier_counts=np.asarray(inlier_counts, np.int64),
                     inliers=np.concatenate(inliers) if inliers else empty,
                     F=np.asarray(fs).reshape(-1, 3, 3), E=np.asarray(es).reshape(-1, 3, 3))

    write_atomically(w.block_path(block), write)
    return len(pairs)


def read_pairs_file(path: str, names: list) -> list:
    """hloc's pairs file (one `name1 name2` per line) as index pairs; pairs are kept in the file's order."""
    index = {n: k for k, n in enumerate(names)}
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in index or parts[1] not in index or parts[0] == parts[1]:
            raise SystemExit(f"{path}:{number}: expected two different extracted image names, got {line!r}")
        pairs.append((index[parts[0]], index[parts[1]]))
    return pairs


def match(work: str, pairs: str = "exhaustive", block: int = 256, ratio: Optional[float] = None,
          camera: str = "auto", min_inliers: int = 15, log=print) -> dict:
    """Matches and verifies the pairs (`exhaustive`, `sequential:N` or a pairs file) in blocks of Ray tasks."""
    w = Work(work)
    store = FeatureStore.scan(w)
    pair_spec = {"pairs": pairs, "block": block, "ratio": ratio, "camera": camera, "min_inliers": min_inliers}
    listed = read_pairs_file(pairs, store.names) if Path(pairs).is_file() else pair_list(pairs, len(store.names))
    settings_path = w.root / "matching.json"
    if settings_path.exists() and json.loads(settings_path.read_text()) != pair_spec:
        raise SystemExit(f"{w.root} holds matches made with other settings ({settings_path}); use another folder")
    write_atomically(settings_path, lambda tmp: tmp.write_text(json.dumps(pair_spec)))
    w.matches.mkdir(exist_ok=True)
    blocks = [(b, listed[k:k + block], k) for b, k in enumerate(range(0, len(listed), block))]
    todo = [b for b in blocks if not w.block_path(b[0]).exists()]
    log(f"match: {len(store.names)} images, {len(listed)} pairs in {len(blocks)} blocks, "
        f"{len(blocks) - len(todo)} already written")
    start = time.monotonic()
    located = lambda block_pairs: {i: (store.names[i], store.shard_of[store.names[i]])
                                   for pair in block_pairs for i in pair}
    pending = [match_block.remote(str(w.root), b, p, first, located(p), ratio, camera, min_inliers)
               for b, p, first in todo]
    done = 0
    while pending:
        ready, pending = ray.wait(pending)
        done += sum(ray.get(ready))
        log(f"  {done} pairs matched and verified ({done / max(time.monotonic() - start, 1e-9):.0f} pairs/s)")
    seconds = time.monotonic() - start
    log(f"match: {len(todo)} blocks in {seconds:.1f} s")
    return {"pairs": len(listed), "blocks": len(todo), "seconds": seconds}


# --- the database -----------------------------------------------------------------------------------------------

def merge(work: str, database: str, camera: str = "auto", log=print) -> dict:
    """Writes the COLMAP database from the shards and blocks: images in name order, pairs in list order."""
    w = Work(work)
    store = FeatureStore.scan(w)
    writer = ColmapWriter(database, camera)
    ids = [writer.add_image(name, store[name]) for name in store.names]
    store.close()
    pairs = verified = 0
    blocks = sorted(w.matches.glob("block-*.npz"))
    for path in blocks:
        with np.load(path) as b:
            m_end = np.cumsum(b["counts"])
            i_end = np.cumsum(b["inlier_counts"])
            for k, (i, j) in enumerate(b["pairs"]):
                matches = b["matches"][m_end[k] - b["counts"][k]:m_end[k]]
                geometry = {"config": int(b["config"][k]),
                            "inliers": b["inliers"][i_end[k] - b["inlier_counts"][k]:i_end[k]],
                            "F": None if np.isnan(b["F"][k]).any() else b["F"][k],
                            "E": None if np.isnan(b["E"][k]).any() else b["E"][k]}
                writer.add_pair(ids[i], ids[j], np.ascontiguousarray(matches), geometry)
                pairs += 1
                verified += geometry["config"] != FAILED
    writer.finish()
    log(f"merge: {len(ids)} images, {pairs} pairs ({verified} verified) into {database}")
    return {"images": len(ids), "pairs": pairs, "verified": verified}


def colmap(images: str, work: str, database: str, camera: str = "auto", pairs: str = "exhaustive", **options) -> dict:
    """extract, match and merge."""
    extract_keys = {"workers", "gpus_per_worker", "cpus_per_worker", "shard_size", "device", "weights",
                    "max_keypoints", "recursive", "log"}
    match_keys = {"block", "ratio", "min_inliers", "log"}
    extract(images, work, **{k: v for k, v in options.items() if k in extract_keys})
    match(work, pairs, camera=camera, **{k: v for k, v in options.items() if k in match_keys})
    return merge(work, database, camera, **{k: v for k, v in options.items() if k == "log"})


# --- the command line -------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strek.ray", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="Ray cluster to join (`auto`: the running one; default: a running "
                                          "cluster if there is one, else a local one)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    sub = parser.add_subparsers(dest="command", required=True)

    def extract_options(p):
        p.add_argument("images", help="image folder, or a text file listing image paths (one per line)")
        p.add_argument("-o", "--work", required=True, help="work folder (features, matches, manifest)")
        p.add_argument("--workers", type=int, default=1, help="strek actors (one session each)")
        p.add_argument("--gpus-per-worker", type=float, default=0.0)
        p.add_argument("--cpus-per-worker", type=float, default=1.0)
        p.add_argument("--shard-size", type=int, default=16, help="images per shard file")
        p.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
        p.add_argument("--weights", help=".safetensors file (default: the shipped weights)")
        p.add_argument("--max-keypoints", type=int)
        p.add_argument("-r", "--recursive", action="store_true")

    def match_options(p):
        p.add_argument("--pairs", default="exhaustive", help="exhaustive, sequential:N, or an hloc pairs file")
        p.add_argument("--block", type=int, default=256, help="pairs per task")
        p.add_argument("--ratio", type=float, help="ratio test (default: none)")
        p.add_argument("--camera", default="auto", help="auto or pinhole:fx,fy,cx,cy (strek's pixel convention)")
        p.add_argument("--min-inliers", type=int, default=15)

    extract_options(sub.add_parser("extract", help="features of an image folder"))
    m = sub.add_parser("match", help="match and verify the extracted features")
    m.add_argument("work")
    match_options(m)
    g = sub.add_parser("merge", help="the COLMAP database from the features and matches")
    g.add_argument("work")
    g.add_argument("--database", required=True)
    g.add_argument("--camera", default="auto")
    c = sub.add_parser("colmap", help="extract, match and merge")
    extract_options(c)
    match_options(c)
    c.add_argument("--database", required=True)
    args = parser.parse_args(argv)

    ray.init(address=args.address, num_cpus=args.num_cpus, log_to_driver=False, include_dashboard=False)
    log = lambda line: print(line, file=sys.stderr, flush=True)
    extract_args = lambda: dict(workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                                cpus_per_worker=args.cpus_per_worker, shard_size=args.shard_size,
                                device=args.device, weights=args.weights, max_keypoints=args.max_keypoints,
                                recursive=args.recursive, log=log)
    try:
        if args.command == "extract":
            extract(args.images, args.work, **extract_args())
        elif args.command == "match":
            match(args.work, args.pairs, args.block, args.ratio, args.camera, args.min_inliers, log=log)
        elif args.command == "merge":
            merge(args.work, args.database, args.camera, log=log)
        else:
            colmap(args.images, args.work, args.database, args.camera, args.pairs, block=args.block,
                   ratio=args.ratio, min_inliers=args.min_inliers, **extract_args())
    except StrekError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # run as the imported module, so that Ray ships its functions by reference (workers import strek.ray)
    from strek import ray as _module
    sys.exit(_module.main())
