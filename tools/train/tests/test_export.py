"""Train CLI (tiny, with resume), export, and the round trip: the exported tensors alone reproduce the modules."""
import json
import math
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from strek_train import export, train
from strek_train.basis import rot90
from strek_train.config import default_config, descriptor_stride, heatmap_margin
from strek_train.data import synthetic_image
from strek_train.descriptor import Descriptor, build_descriptor
from strek_train.detector import Detector
from strek_train.reference import expected_tensor_names, run_model
from strek_train.sampler import SamplerConfig


def randomise_norms(det):
    for norm in det.norms:
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("n", [4, 8, 16])
def test_exported_filters_have_the_exact_rot90_structure(n):
    torch.manual_seed(n)
    cfg = default_config(group_order=n)
    det = Detector(cfg, logit_gain=0.01)
    randomise_norms(det)
    tensors = export.export_tensors(det.eval(), Descriptor(cfg).eval())
    for i in range(len(cfg["detector"]["fields"])):
        w = tensors[f"detector.{i}.weight"]
        export.check_rot90_structure(f"detector.{i}.weight", w, n, lifting=i == 0)  # exact: torch.equal
        b = tensors[f"detector.{i}.bias"].reshape(-1, n)
        assert torch.equal(b, b[:, :1].expand_as(b))  # one bias per field
    broken = tensors["detector.3.weight"].clone()
    broken[0, 0, 0, 1] += 1e-6
    with pytest.raises(ValueError, match="detector.3.weight"):
        export.check_rot90_structure("detector.3.weight", broken, n, lifting=False)
    # docs/model.md, spelled out for one entry: W[g*N + (r+N/4)%N, f*N + (s+N/4)%N] == rot90(W[g*N + r, f*N + s]).
    w = tensors["detector.2.weight"]
    g, r, f, s = 1, 1, 0, n - 1
    assert torch.equal(w[g * n + (r + n // 4) % n, f * n + (s + n // 4) % n], rot90(w[g * n + r, f * n + s]))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    stack = np.stack([synthetic_image(rng, 90, 100) for _ in range(5)])
    np.save(root / "images.npy", stack)
    common = ["--images", str(root / "images.npy"), "--size", "64", "--batch", "2", "--val-size", "64",
              "--val-keypoints", "20", "--budget", "12", "--log-every", "1", "--val-every", "2", "--desc-keypoints",
              "16"]
    det_dir, desc_dir = root / "det", root / "desc"
    localise = ["--localisation-weight", "1.0"]
    train.main(["--stage", "detector", "--out", str(det_dir), "--steps", "2", *localise, *common])
    train.main(["--stage", "detector", "--out", str(det_dir), "--steps", "3", *localise, *common])  # resumes
    train.main(["--stage", "descriptor", "--out", str(desc_dir), "--steps", "2", "--detector",
                str(det_dir / "checkpoint.pt"), "--keep-val-checkpoints", *common])
    return root, det_dir, desc_dir


def test_training_resumes_and_logs(tiny_runs):
    _, det_dir, desc_dir = tiny_runs
    ckpt = torch.load(det_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 3 and ckpt["stage"] == "detector"
    assert ckpt["train_config"]["sampler"] == {**SamplerConfig(budget=12).to_dict()}
    rows = open(det_dir / "log.csv").read().strip().splitlines()
    assert rows[0].startswith("step,") and [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    assert ckpt["train_config"]["reward"]["localisation_weight"] == 1.0
    header = rows[0].split(",")
    loc_after = [row.split(",")[header.index("loc_after")] for row in rows[2:]]
    assert all(float(v) >= 0 for v in loc_after), loc_after  # logged at every training step
    assert not os.path.exists(det_dir / "checkpoint.pt.tmp")
    rows = open(desc_dir / "log.csv").read().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    # --keep-val-checkpoints: the weights of each validated step, besides the run's own checkpoint
    assert sorted(p.name for p in desc_dir.glob("val-*.pt")) == ["val-000002.pt"]
    assert torch.load(desc_dir / "val-000002.pt", weights_only=False)["step"] == 2
    assert not list(det_dir.glob("val-*.pt"))


def test_a_run_initialised_from_a_checkpoint_starts_from_its_weights_with_new_settings(tiny_runs):
    root, det_dir, _ = tiny_runs
    ft_dir = root / "det-ft"
    common = ["--images", str(root / "images.npy"), "--batch", "2", "--val-size", "64", "--val-keypoints", "20",
              "--budget", "12", "--log-every", "1", "--val-every", "100"]
    train.main(["--stage", "detector", "--out", str(ft_dir), "--steps", "0", "--init", str(det_dir / "checkpoint.pt"),
                "--size", "72", "--view-scale", "0.6", "1.6", *common])
    base = torch.load(det_dir / "checkpoint.pt", weights_only=False)
    tuned = torch.load(ft_dir / "checkpoint.pt", weights_only=False)
    assert tuned["step"] == 0 and tuned["args"]["size"] == 72 and tuned["args"]["view_scale"] == [0.6, 1.6]
    assert tuple(tuned["train_config"]["pairs"]["view_scale"]) == (0.6, 1.6)
    assert all(torch.equal(base["model"][k], tuned["model"][k]) for k in base["model"])
    with pytest.raises(SystemExit, match="detector run, not descriptor"):
        train.main(["--stage", "descriptor", "--out", str(root / "bad"), "--steps", "0", "--init",
                    str(det_dir / "checkpoint.pt"), "--detector", str(det_dir / "checkpoint.pt"), *common])


def test_export_round_trip_and_golden(tiny_runs):
    root, det_dir, desc_dir = tiny_runs
    out, golden_path = root / "strek.safetensors", root / "golden.safetensors"
    export.main(["--detector", str(det_dir / "checkpoint.pt"), "--descriptor", str(desc_dir / "checkpoint.pt"),
                 "-o", str(out), "--golden", str(golden_path)])
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["strek.format"] == "1"
    cfg = json.loads(meta["strek.config"])
    assert set(cfg) == {"group_order", "input", "detector", "descriptor", "inference", "provenance"}
    assert {"data", "steps", "date", "commit", "command"} <= set(cfg["provenance"])
    assert cfg["provenance"]["steps"] == 3 + 2
    assert sorted(tensors) == sorted(expected_tensor_names(cfg))
    assert all(t.dtype == torch.float32 for t in tensors.values())

    # The modules, loaded from the checkpoints, against a plain dense forward of the exported tensors.
    det_ckpt = torch.load(det_dir / "checkpoint.pt", weights_only=False)
    det = train.build_detector(det_ckpt["train_config"], det_ckpt["model_config"])
    det.load_state_dict(det_ckpt["model"])
    desc = Descriptor(cfg)
    desc.load_state_dict(torch.load(desc_dir / "checkpoint.pt", weights_only=False)["model"])
    image = torch.from_numpy(export.golden_image())
    ref = run_model(tensors, cfg, image)
    x = ((image.double() / 255 - cfg["input"]["mean"]) / cfg["input"]["std"])[None, None]
    with torch.no_grad():
        logits = det.double().eval()(x)[0]
        dmap = desc.double().eval()(x)[0]
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
    assert rel(ref["group_logits"], logits) < 1e-5
    assert rel(ref["descriptor_map"], dmap) < 1e-5

    with safe_open(str(golden_path), "pt") as f:
        golden = {k: f.get_tensor(k) for k in f.keys()}
        assert json.loads(f.metadata()["strek.config"]) == cfg
    h, w = export.GOLDEN_SIZE
    r = 2 * heatmap_margin(cfg)
    s = descriptor_stride(cfg)
    assert golden["image"].dtype == torch.uint8 and tuple(golden["image"].shape) == (h, w)
    assert tuple(golden["group_logits"].shape) == (cfg["group_order"], h - r, w - r)
    assert tuple(golden["heatmap"].shape) == (h - r, w - r)
    assert tuple(golden["descriptor_map"].shape) == (cfg["descriptor"]["dim"], h // s, w // s)
    assert all(golden[k].dtype == torch.float64 for k in ["group_logits", "heatmap", "orientation", "descriptor_map"])
    for k, v in ref.items():
        assert torch.equal(golden[k], v), k
    assert torch.equal(golden["heatmap"], golden["group_logits"].max(0).values)
    assert golden["orientation"].min() >= 0 and golden["orientation"].max() < 2 * math.pi
    assert torch.allclose(golden["descriptor_map"].norm(dim=0), torch.ones(h // s, w // s, dtype=torch.float64))


def write_hires_photos(directory, seed: int):
    """Three synthetic 300 x 340 "camera-resolution" photos as PNG files in a new `directory` (for --hires-data)."""
    import cv2

    directory.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(3):
        cv2.imwrite(str(directory / f"h{i}.png"), np.round(synthetic_image(rng, 300, 340) * 255).astype(np.uint8))
    return directory


def test_group_descriptor_run_export_round_trip_and_golden(tiny_runs):
    """Version 2: a tiny group_unet run (InfoNCE, jittered positives, camera-like changes, full-resolution crops),
    exported; the dense tensors alone reproduce the module's map and the aligned keypoint descriptors."""
    root, det_dir, _ = tiny_runs
    hires_dir = write_hires_photos(root / "hires", seed=9)
    run = root / "gdesc"
    common = ["--images", str(root / "images.npy"), "--size", "64", "--batch", "2", "--val-size", "64",
              "--val-keypoints", "20", "--log-every", "1", "--val-every", "2", "--desc-keypoints", "16",
              "--descriptor-kind", "group_unet", "--desc-loss", "infonce", "--pos-jitter", "1.5", "--augment", "real",
              "--hires", "0.5", "--hires-data", str(hires_dir), "--detector", str(det_dir / "checkpoint.pt")]
    train.main(["--stage", "descriptor", "--out", str(run), "--steps", "2", *common])
    rows = open(run / "log.csv").read().strip().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))
    assert last["step"] == "2" and all(last[k] for k in ["val_mma3", "val_mma3_real", "val_mma3_hires"])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["model_config"]["descriptor"]["kind"] == "group_unet"
    assert ckpt["train_config"]["pairs"]["augment"] == "real" and ckpt["train_config"]["pairs"]["hires_fraction"] == 0.5

    out, golden_path = root / "g.safetensors", root / "g-golden.safetensors"
    export.main(["--detector", str(det_dir / "checkpoint.pt"), "--descriptor", str(run / "checkpoint.pt"),
                 "-o", str(out), "--golden", str(golden_path)])
    with safe_open(str(out), "pt") as f:
        cfg = json.loads(f.metadata()["strek.config"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert cfg["descriptor"] == ckpt["model_config"]["descriptor"]
    assert sorted(tensors) == sorted(expected_tensor_names(cfg))
    desc = build_descriptor(cfg)
    desc.load_state_dict(ckpt["model"])
    desc = desc.double().eval()
    image = torch.from_numpy(export.golden_image())
    keypoints = export.golden_keypoints(*image.shape)
    ref = run_model(tensors, cfg, image, keypoints=keypoints)
    x = ((image.double() / 255 - cfg["input"]["mean"]) / cfg["input"]["std"])[None, None]
    with torch.no_grad():
        dmap = desc(x)[0]
        module_desc = desc.sample(dmap, keypoints[:, :2], keypoints[:, 2], tuple(image.shape))
    assert float((ref["descriptor_map"] - dmap).abs().max()) < 1e-5
    assert float((ref["descriptors"] - module_desc).abs().max()) < 1e-5
    with safe_open(str(golden_path), "pt") as f:
        golden = {k: f.get_tensor(k) for k in f.keys()}
    assert torch.equal(golden["keypoints"], keypoints)
    assert tuple(golden["descriptor_map"].shape) == (128, 12, 16)  # 47 x 61 -> 24 x 31 -> 12 x 16
    assert tuple(golden["descriptors"].shape) == (len(keypoints), 128)
    for k, v in ref.items():
        assert torch.equal(golden[k], v), k
    assert torch.allclose(golden["descriptors"].norm(dim=1), torch.ones(len(keypoints), dtype=torch.float64))


def test_a_hires_run_with_the_basic_changes_validates_on_the_held_out_hires_photos(tiny_runs):
    """--hires adds the full-resolution validation pairs whatever --augment is (they were made for --augment real
    only, so a detector run with --hires and the basic changes logged no val_*_hires)."""
    root, det_dir, _ = tiny_runs
    hires_dir = write_hires_photos(root / "hires-basic", seed=11)
    run = root / "det-hires"
    train.main(["--stage", "detector", "--out", str(run), "--steps", "2", "--images", str(root / "images.npy"),
                "--size", "64", "--batch", "2", "--val-size", "64", "--val-keypoints", "20", "--budget", "12",
                "--log-every", "1", "--val-every", "2", "--hires", "0.5", "--hires-data", str(hires_dir),
                "--init", str(det_dir / "checkpoint.pt"), "--localisation-weight", "1.0"])
    rows = open(run / "log.csv").read().strip().splitlines()
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert last["step"] == "2" and all(last[k] for k in ["val_rep3", "val_rep3_hires", "val_rep1_hires"])
    assert not last["val_rep3_real"]
