"""Micro-AU CLIP as the paper may describe it (issue 17): optical-flow input, a trainable text
tower, prompt-based recognition, and the `paper` preset against the suite's reading."""
import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from suite.aus import DATASET_AUS
from suite.data import load_cache, prepare
from suite.engine import DatasetTensors, SequentialEngine, get_accelerator
from suite.folds import FoldRunner, FoldTask, run_tasks
from suite.models.micro_au_clip import flow_image
from suite.presets import PresetError, preset_overrides
from suite.protocol import loso_folds
from suite.registry import get_method, resolve_hparams
from suite.results import load_record, metrics_from_predictions
from suite.runs import run

from helpers import AUS, frames_batch, micro_au_clip


def test_flow_mode_feeds_the_flow_to_the_image_tower():
    model = micro_au_clip(motion="flow", dropout=0.0).eval()
    seen = []
    model.encoder.visual.conv1.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    batch = frames_batch()
    out = model(batch)["logits"]
    assert torch.allclose(seen[0], model.encoder.normalize(flow_image(batch["flow"], 4.0)), atol=1e-6)  # the flow, as an image
    other_apex = {**batch, "apex": torch.randint(0, 256, batch["apex"].shape, dtype=torch.uint8)}
    assert torch.equal(model(other_apex)["logits"], out)  # RGB frames play no part
    other_flow = {**batch, "flow": batch["flow"].flip(1)}
    assert not torch.allclose(model(other_flow)["logits"], out)
    img = flow_image(torch.tensor([[[[8.0, -2.0]]]]), 4.0)[0, 0, 0]
    assert torch.allclose(img, torch.tensor([1.0, 0.25, 1.0]))  # u clipped to the range, v = 0.5 − 0.25, magnitude clipped


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_text_tower_trains_only_when_asked(mode):
    model = micro_au_clip(text_mode=mode, dropout=0.0)
    text_params = model.encoder.text_parameters()
    batch = {**frames_batch(), "au": torch.randint(0, 2, (3, len(AUS))).float()}
    batch["features"] = model.encode(batch).detach()
    if mode == "frozen":
        assert model.encoder.text is None and not text_params  # the tower was dropped after encoding the prompts once
        assert model.encoder.prompt_embeddings() is model.encoder.prompt_embeddings()
        assert model.batch_refusal is None
        return
    groups = model.param_groups(1e-3, 0.0)
    assert any(g["lr"] == pytest.approx(1e-4) and g["params"] == text_params for g in groups)  # its own learning rate
    before = [p.detach().clone() for p in text_params]
    opt = torch.optim.AdamW(groups)
    model(batch)["loss"].backward()
    assert all(p.grad is not None for p in text_params)
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, text_params))
    assert "text tower is trained" in model.batch_refusal  # the fold-batched engine refuses, clearly


def test_prompt_recognition_uses_no_emotion_label_and_recomputes(synthetic, tmp_path):
    hp = {"epochs": "1", "batch_size": "8", "prompt_recognition": "true"}
    [path] = run("micro_au_clip", "casme2", synthetic / "CASME2", hp, 1, results=tmp_path, log=None)
    record = load_record(path)
    assert {"objective_prompt", "emotion5_prompt"} <= set(record["mer"]) and record["engine"] == "sequential"
    frame = pd.read_parquet(path.with_name(record["predictions"]))
    again = metrics_from_predictions(frame, "casme2", AUS)["mer"]
    assert again["objective_prompt"] == pytest.approx(record["mer"]["objective_prompt"])
    # the same model on shuffled emotion labels predicts the same classes
    cache = prepare("casme2", synthetic / "CASME2", tmp_path)
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], AUS, torch.device("cpu"), cache.fingerprint)
    fold = loso_folds(data.subject, 0.25, 0)[0]
    spec, hpr = get_method("micro_au_clip"), resolve_hparams(get_method("micro_au_clip"), hp)
    hpr = {**hpr, "selection": "fixed"}
    first = run_tasks(SequentialEngine(spec, hpr, data, AUS, 0, get_accelerator(cpu=True)).run_jobs, data, [FoldTask(fold, hpr, 0)])[0].recognition
    data.emotion = np.random.default_rng(0).permutation(data.emotion)
    data.objective_class = np.random.default_rng(1).permutation(data.objective_class)
    second = run_tasks(SequentialEngine(spec, hpr, data, AUS, 0, get_accelerator(cpu=True)).run_jobs, data, [FoldTask(fold, hpr, 0)])[0].recognition
    assert first.shape == (len(fold.test), 12) and np.array_equal(first, second)


def test_presets_are_named_and_checked():
    overrides, fields = preset_overrides("paper", "micro_au_clip")
    assert overrides["clip_model"] == "ViT-B-32" and overrides["motion"] == "flow" and overrides["text_mode"] == "full"
    assert fields["preset"] == "paper" and "digest" in fields["preset_source"]
    assert preset_overrides(None, "constant") == ({}, {})
    with pytest.raises(PresetError, match="not 'constant'"):
        preset_overrides("paper", "constant")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["casme2", "samm"])
def test_paper_preset_trains_one_fold(synthetic, tmp_path, dataset):
    """The `paper` preset end to end on one fold for one epoch: a ViT-B-32-shaped random-init
    checkpoint written here (no download), flow input at 224 px, the text tower trained."""
    weights = tmp_path / "vit-b-32.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), weights)
    overrides, _ = preset_overrides("paper", "micro_au_clip")
    hp = resolve_hparams(get_method("micro_au_clip"), {**overrides, "pretrained": str(weights), "epochs": 1, "batch_size": 16,
                                                       "selection": "fixed"})
    folder = {"casme2": "CASME2", "samm": "SAMM"}[dataset]
    cache = prepare(dataset, synthetic / folder, tmp_path, image_size=224, flow=True)
    aus = DATASET_AUS[dataset]
    data = DatasetTensors.from_cache(load_cache(cache.path)[0], aus, torch.device("cpu"), cache.fingerprint)
    engine = SequentialEngine(get_method("micro_au_clip"), hp, data, aus, 0, get_accelerator(cpu=True))
    assert engine.features is None  # fine-tuned: no cached tokens
    assert FoldRunner(get_method("micro_au_clip"), data).engine_for(hp)[0] == "sequential"  # the text tower is trained
    model = engine.acc.unwrap_model(engine.model)
    assert model.encoder.text is not None and model.encoder.visual.conv1.weight.shape[-1] == 32  # ViT-B/32 patches
    before = model.encoder.text.text_projection.detach().clone()
    [out] = run_tasks(engine.run_jobs, data, [FoldTask(loso_folds(data.subject, 0.25, 0)[0], hp, 0)])
    assert out.prob.shape == (len(out.test), len(aus)) and np.isfinite(out.prob).all()
    assert out.recognition.shape == (len(out.test), 12)
    assert not torch.equal(before, model.encoder.text.text_projection)  # the text tower trained
