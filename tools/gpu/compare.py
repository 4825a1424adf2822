#!/usr/bin/env python3
"""One table from `strek bench --json` and `strek_torch.py bench --json`: median end-to-end milliseconds per image
size and batch size, and the ratio (PyTorch time / strek time: above 1, strek is faster); with --f16, strek's
f16-storage run (`strek --f16 bench --json`) beside it.

    python3 tools/gpu/compare.py strek.json torch.json [--f16 strek-f16.json] [-o table.md]
"""

import argparse
import json
import pathlib


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("strek")
    parser.add_argument("torch")
    parser.add_argument("--f16", help="strek bench --json of the same sizes with --f16")
    parser.add_argument("-o", "--out", help="also write the table here (Markdown)")
    args = parser.parse_args(argv)
    s = json.loads(pathlib.Path(args.strek).read_text())
    f16 = json.loads(pathlib.Path(args.f16).read_text()) if args.f16 else None
    f16_rows = {(r["width"], r["height"], r["batch"]): r for r in (f16["results"] if f16 else [])}
    t = json.loads(pathlib.Path(args.torch).read_text())
    torch_rows = {(r["mode"], r["width"], r["height"], r["batch"]): r for r in t["results"]}
    modes = sorted({r["mode"] for r in t["results"]}, key=lambda m: (m != "eager", m))
    lines = [
        f"strek: {s['device']} ({s['timing']})",
        f"PyTorch {t['torch']} (CUDA {t['cuda']}, TF32 off, torch.compile mode {t['compile_mode']}): {t['device']}",
        f"weights: {s['weights']}; top {s['top_k']} keypoints; median wall time end to end (host images in, features"
        " on the host out), milliseconds",
        "",
    ]
    if s.get("software_adapter"):
        lines.insert(0, "WARNING: strek ran on a SOFTWARE adapter; its times are not GPU times")
    f16_header = "strek f16 ms | " if f16 else ""
    header = "| size | batch | strek ms | " + f16_header + " | ".join(f"torch {m} ms | {m}/strek" for m in modes) + " | strek img/s |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for r in s["results"]:
        key = (r["width"], r["height"], r["batch"])
        ms = 1e3 * r["wall"]["median"]
        cells = [f"{r['width']}x{r['height']}", str(r["batch"]), f"{ms:.2f}"]
        if f16:
            fr = f16_rows.get(key)
            cells.append("-" if fr is None else f"{1e3 * fr['wall']['median']:.2f}")
        for m in modes:
            tr = torch_rows.get((m,) + key)
            if tr is None:
                cells += ["-", "-"]
            else:
                tms = 1e3 * tr["wall"]["median"]
                cells += [f"{tms:.2f}", f"{tms / ms:.2f}"]
        cells.append(f"{r['images_per_second']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
