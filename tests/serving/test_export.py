"""Export for serving: TorchScript and ONNX artifacts agree with the eager model on the dataset's
rows, carry the trained v, describe themselves in a sidecar, and their loader refuses bad ids."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dfei.data.dataset import ParquetDataset
from dfei.serving.loader import RequestError, ServingModel
from dfei.train.checkpoint import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _test_rows(data: str) -> tuple[np.ndarray, np.ndarray]:
    """Every test row of every domain, domains interleaved (a mixed batch, as serving gets)."""
    from dfei.data.ingest import DomainReader

    ds = ParquetDataset(data)
    xs, ds_ids = [], []
    for i, dom in enumerate(ds.spec.domains):
        for x, _ in DomainReader(ds, "test", i, batch_size=1 << 16).batches():
            xs.append(x)
            ds_ids.append(np.full(len(x), dom.id))
    x, d = np.concatenate(xs).astype(np.int64), np.concatenate(ds_ids)
    order = np.random.default_rng(0).permutation(len(d))
    return x[order], d[order]


@pytest.fixture(scope="module", params=["torchscript", "onnx"])
def exported(request, tracked_run, tmp_path_factory):
    from dfei.serving.export import export_checkpoint

    out = str(tmp_path_factory.mktemp("export") / f"dfei.{'onnx' if request.param == 'onnx' else 'pt'}")
    meta = export_checkpoint(tracked_run["metrics"]["checkpoint"], request.param, out, log=lambda *a: None)
    return request.param, out, meta


def test_exported_and_eager_agree_on_every_test_row(exported, tracked_run):
    fmt, out, meta = exported
    model, spec, _ = load_model(tracked_run["metrics"]["checkpoint"], best=True)
    x, d = _test_rows(tracked_run["cfg"].data)
    index = {dom.id: i for i, dom in enumerate(spec.domains)}
    eager = model.predict_proba(torch.from_numpy(x), torch.tensor([index[i] for i in d])).numpy()
    served = ServingModel.load(out).predict(x, d)
    assert served.shape == (len(x),) and served.dtype == np.float32
    assert float(np.abs(served - eager).max()) <= 1e-5
    assert meta["parity"]["max_abs_error_vs_eager"] <= 1e-5
    assert len(np.unique(d)) == spec.num_domains  # the batch really mixed every domain


def test_the_trained_domain_features_are_baked_in(exported, tracked_run):
    fmt, out, meta = exported
    ckpt_v = load_model(tracked_run["metrics"]["checkpoint"], best=True)[0].dfe.v
    assert meta["domain_features"]["norms"] == pytest.approx(ckpt_v.norm(dim=1).tolist())
    assert float(ckpt_v.norm()) > 0  # a trained buffer, not the authors' random or a zero vector
    if fmt == "torchscript":  # the buffer is in the artifact, equal to the checkpoint's
        module = torch.jit.load(out)
        assert torch.equal(dict(module.named_buffers())["model.dfe.v"], ckpt_v)


def test_the_sidecar_describes_inputs_domains_and_config(exported, tracked_run):
    fmt, out, meta = exported
    side = json.load(open(out + ".json"))
    spec = ParquetDataset(tracked_run["cfg"].data).spec
    assert side["format"] == fmt and side["model"] == "dfei" and side["model_config"]["alpha"] == 0.9
    assert side["inputs"]["features"]["columns"] == spec.feature_names
    assert [(f["name"], f["cardinality"]) for f in side["features"]] == [(f.name, f.cardinality) for f in spec.features]
    assert [(d["id"], d["name"]) for d in side["domains"]] == [(d.id, d.name) for d in spec.domains]
    import hashlib

    assert side["sha256"] == hashlib.sha256(open(out, "rb").read()).hexdigest()


def test_the_loader_refuses_unknown_domains_and_out_of_range_ids(exported, tracked_run):
    _, out, _ = exported
    model = ServingModel.load(out)
    x, d = _test_rows(tracked_run["cfg"].data)
    x, d = x[:8].copy(), d[:8].copy()
    bad_domain = d.copy()
    bad_domain[3] = 5  # B6: not in day 0's data, so not in this model
    with pytest.raises(RequestError, match=r"domain id 5 at row 3 is not one the model was trained on"):
        model.predict(x, bad_domain)
    for col, value in ((0, model.cardinalities[0]), (2, -1)):
        bad = x.copy()
        bad[5, col] = value
        with pytest.raises(RequestError, match=rf"feature '{model.feature_names[col]}' \(column {col}\): id {value} "
                                               rf"at row 5 is outside \[0, {model.cardinalities[col]}\)"):
            model.predict(bad, d)
    with pytest.raises(RequestError, match="features must be"):
        model.predict(x[:, :3], d)
    with pytest.raises(RequestError, match="integer ids"):
        model.predict(x.astype(np.float32), d)
    cols = {n: x[:, j] for j, n in enumerate(model.feature_names)}
    assert np.array_equal(model.predict_columns(cols, d), model.predict(x, d))


def test_the_cli_exports_and_refuses_to_overwrite(tracked_run, tmp_path, capsys):
    out = tmp_path / "m.pt"
    args = ["--checkpoint", tracked_run["metrics"]["checkpoint"], "--format", "torchscript", "--out", str(out)]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "pipelines", "export.py"), *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "max |exported - eager|" in proc.stdout and out.exists() and (tmp_path / "m.pt.json").exists()
    # the refusals in this process
    spec = importlib.util.spec_from_file_location("pipeline_export", os.path.join(ROOT, "pipelines", "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    assert module.main(args) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert module.main(["--checkpoint", str(tmp_path / "nope"), *args[2:-1], str(tmp_path / "n.pt")]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "n.pt").exists()


def test_the_artifact_alone_gives_nan_for_an_unknown_domain_never_another_domains_score(exported, tracked_run):
    fmt, out, _ = exported
    x, d = _test_rows(tracked_run["cfg"].data)
    x, d = x[:8].copy(), d[:8].copy()
    good = ServingModel.load(out).predict(x, d)
    raw = d.copy()
    raw[1], raw[4] = 5, -1  # 5: a domain id beyond the model's; -1 would wrap to the last domain if indexed
    if fmt == "torchscript":
        with torch.no_grad():
            served = torch.jit.load(out)(torch.from_numpy(x), torch.from_numpy(raw)).numpy()
    else:
        import onnxruntime as ort

        served = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(
            ["ctr"], {"features": x, "domain_ids": raw})[0]
    assert np.isnan(served[[1, 4]]).all()
    keep = [0, 2, 3, 5, 6, 7]
    assert np.abs(served[keep] - good[keep]).max() <= 1e-6


def test_the_loader_refuses_an_artifact_its_sidecar_does_not_describe(exported, tmp_path):
    _, out, _ = exported
    copy = tmp_path / os.path.basename(out)
    copy.write_bytes(open(out, "rb").read())
    side = json.load(open(out + ".json"))
    side["sha256"] = "0" * 64  # a sidecar from another export
    (tmp_path / (os.path.basename(out) + ".json")).write_text(json.dumps(side))
    with pytest.raises(ValueError, match="is not the one its sidecar"):
        ServingModel.load(str(copy))


def test_an_onnx_export_prints_no_exporter_notes(tiny_checkpoint, tmp_path, caplog):
    """The exporters' WARNING notes (torchvision's nms, empty attribute sequences) are not about the
    model and are not shown; the export is still checked against the eager model."""
    import logging

    pytest.importorskip("onnxruntime")
    from dfei.serving.export import export_checkpoint

    with caplog.at_level(logging.WARNING):
        meta = export_checkpoint(tiny_checkpoint, "onnx", str(tmp_path / "m.onnx"), log=lambda *a: None)
    assert meta["parity"]["max_abs_error_vs_eager"] <= meta["parity"]["tolerance"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert logging.getLogger("torch.onnx").level == logging.NOTSET  # restored after the export
