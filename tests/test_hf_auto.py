"""Checkpoints load the Hugging Face way: Auto classes, trust_remote_code, one inference loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoTokenizer

import pretrain
from pretrain.auto_classes import IncompleteCheckpointError, load_for_inference
from pretrain.config import ImageBertConfig
from pretrain.model import ImageBertForPreTraining, ImageBertModel
from pretrain.plan import load_plan
from pretrain.regions import build_region_source
from pretrain.shards import read_shard
from pretrain.synthetic import write_scene_folder
from pretrain.text import load_tokenizer
from pretrain.trainer import run_plan

DEMO_PLAN = Path(pretrain.__file__).parent / "plans" / "demo.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0) -> ImageBertForPreTraining:
    torch.manual_seed(seed)
    config = ImageBertConfig(
        vocab_size=120,
        cls_token_id=101,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        region_feature_dim=8,
        num_region_classes=5,
        contrastive_dim=16,
    )
    model = ImageBertForPreTraining(config).eval()
    with torch.no_grad():  # post_init zeroes biases; random ones catch a bias left unloaded
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(std=0.1)
    return model


def tiny_inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    attention = torch.ones(2, 6, dtype=torch.long)
    attention[1, 4:] = 0
    region_mask = torch.ones(2, 3, dtype=torch.bool)
    region_mask[0, 2] = False
    return {
        "input_ids": torch.randint(0, 120, (2, 6), generator=generator),
        "attention_mask": attention,
        "region_features": torch.randn(2, 3, 8, generator=generator),
        "region_boxes": torch.rand(2, 3, 5, generator=generator),
        "region_mask": region_mask,
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageBertForPreTraining, Path]:
    model = tiny_model()
    folder = tmp_path_factory.mktemp("saved") / "final"
    model.save_pretrained(folder)
    return model, folder


def test_auto_classes_load_a_pretraining_checkpoint_after_import_pretrain(
    saved: tuple[ImageBertForPreTraining, Path],
) -> None:
    model, folder = saved
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is ImageBertConfig
    assert config.hidden_size == 32 and config.region_feature_dim == 8

    full = AutoModelForPreTraining.from_pretrained(folder).eval()
    assert type(full) is ImageBertForPreTraining
    expected = model.state_dict()
    loaded = full.state_dict()
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name
    # The MLM decoder stays tied to the word embeddings after loading.
    decoder, words = full.mlm_head.decoder.weight, full.imagebert.embeddings.word_embeddings.weight
    assert decoder.data_ptr() == words.data_ptr()
    inputs = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(full.itm_scores(**inputs), model.itm_scores(**inputs))


def test_auto_model_takes_the_encoder_out_of_a_pretraining_checkpoint(
    saved: tuple[ImageBertForPreTraining, Path],
) -> None:
    model, folder = saved
    encoder = AutoModel.from_pretrained(folder).eval()
    assert type(encoder) is ImageBertModel
    expected = model.imagebert.state_dict()  # the `imagebert.` prefix taken off
    loaded = encoder.state_dict()
    assert loaded.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name
    inputs = tiny_inputs()
    with torch.no_grad():
        got, want = encoder(**inputs), model.imagebert(**inputs)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state)
    torch.testing.assert_close(got.pooler_output, want.pooler_output)


def test_a_folder_saved_before_auto_map_still_loads_after_import(tmp_path: Path) -> None:
    model = tiny_model(seed=2)
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    del config["auto_map"]
    config_file.write_text(json.dumps(config))
    for name in ("config.py", "model.py"):
        (tmp_path / name).unlink()
    encoder = AutoModel.from_pretrained(tmp_path)
    torch.testing.assert_close(
        encoder.embeddings.word_embeddings.weight,
        model.imagebert.embeddings.word_embeddings.weight,
    )


def test_save_pretrained_writes_auto_map_and_the_code_files(tmp_path: Path) -> None:
    root = Path(pretrain.__file__).parent
    sources = {name: (root / name).read_text() for name in ("config.py", "model.py")}
    folder = tmp_path / "final"
    tiny_model().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "imagebert"
    assert config["auto_map"] == {
        "AutoConfig": "config.ImageBertConfig",
        "AutoModel": "model.ImageBertModel",
        "AutoModelForPreTraining": "model.ImageBertForPreTraining",
    }
    for name, text in sources.items():
        assert (folder / name).read_text() == text


REMOTE_CODE_CHECK = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    folder, expected_file = sys.argv[1], sys.argv[2]
    expected = torch.load(expected_file)
    inputs = expected["inputs"]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    report = {
        "config_module": type(config).__module__,
        "pretrain_after_config": "pretrain" in sys.modules,
    }
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    full = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        hidden = encoder(**inputs).last_hidden_state
        itm = full.itm_scores(**inputs)
    report.update(
        encoder_class=type(encoder).__name__,
        encoder_module=type(encoder).__module__,
        full_class=type(full).__name__,
        hidden_diff=float((hidden - expected["hidden"]).abs().max()),
        itm_diff=float((itm - expected["itm"]).abs().max()),
    )
    print(json.dumps(report))
    """
)


def test_trust_remote_code_loads_in_a_fresh_process_without_import_pretrain(
    saved: tuple[ImageBertForPreTraining, Path], tmp_path: Path
) -> None:
    model, folder = saved
    inputs = tiny_inputs()
    with torch.no_grad():
        expected = {
            "inputs": inputs,
            "hidden": model.imagebert(**inputs).last_hidden_state,
            "itm": model.itm_scores(**inputs),
        }
    torch.save(expected, tmp_path / "expected.pt")
    script = tmp_path / "check.py"
    script.write_text(REMOTE_CODE_CHECK)
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),  # where transformers copies remote code
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "expected.pt")],
        cwd=tmp_path,  # not the repository root: `pretrain` is found only as installed
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # The config came from the folder's copied config.py, before anything imported `pretrain`.
    assert report["config_module"].startswith("transformers_modules.")
    assert report["config_module"].endswith(".config")
    assert not report["pretrain_after_config"]
    assert report["encoder_module"].startswith("transformers_modules.")
    assert (report["encoder_class"], report["full_class"]) == (
        "ImageBertModel",
        "ImageBertForPreTraining",
    )
    assert report["hidden_diff"] < 1e-5 and report["itm_diff"] < 1e-5


def test_load_for_inference_says_what_a_folder_lacks(
    saved: tuple[ImageBertForPreTraining, Path],
) -> None:
    _, folder = saved
    with pytest.raises(IncompleteCheckpointError, match=r"tokenizer_config\.json"):
        load_for_inference(folder)


def tiny_demo_plan(data: str) -> dict[str, Any]:
    """Stage 1 of the demo plan with its real region source (the shipped demo CLIP), shrunk."""
    import yaml

    plan = yaml.safe_load(DEMO_PLAN.read_text())
    plan.update(
        holdout=0.0,
        num_workers=0,
        log_every=1,
        save_every=100,
        model={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "contrastive_dim": 16,
        },
    )
    plan["evaluate"]["after_each_stage"] = False
    plan["stages"] = [
        {**plan["stages"][0], "sources": [{"path": data}], "steps": 2, "batch_size": 4}
    ]
    return plan


def test_load_for_inference_rebuilds_a_trainer_final_folder(tmp_path: Path) -> None:
    data = write_scene_folder(str(tmp_path / "web"), 12, seed=4)
    plan = tiny_demo_plan(data)
    trained_regions = build_region_source(load_plan(plan).regions)
    result = run_plan(
        plan,
        out_dir=tmp_path / "run",
        region_source=trained_regions,
        progress=False,
        final_eval=False,
    )
    final = Path(result["final"])

    model, tokenizer, regions = load_for_inference(final)
    assert type(model) is ImageBertForPreTraining and not model.training
    assert regions.spec() == trained_regions.spec()
    auto_tokenizer = AutoTokenizer.from_pretrained(final)
    reference_tokenizer = load_tokenizer()
    samples = read_shard(sorted(Path(data).glob("*.tar"))[0].as_posix()).samples[:3]
    captions = [s.caption() for s in samples]
    for loaded in (tokenizer, auto_tokenizer):
        assert loaded(captions)["input_ids"] == reference_tokenizer(captions)["input_ids"]

    # The three parts score image-text pairs exactly as the trained objects do.
    def scores(net: ImageBertForPreTraining, tok: Any, source: Any) -> torch.Tensor:
        encoded = source.encode(source.collate([source.prepare(s) for s in samples]), "cpu")
        text = tok(captions, padding="longest", return_tensors="pt")
        with torch.no_grad():
            return net.itm_scores(
                text["input_ids"],
                text["attention_mask"],
                encoded.features,
                encoded.boxes,
                encoded.mask,
            )

    reference = ImageBertForPreTraining.from_pretrained(final).eval()
    torch.testing.assert_close(
        scores(model, tokenizer, regions), scores(reference, reference_tokenizer, trained_regions)
    )
    encoder, _, _ = load_for_inference(final, encoder_only=True, region_source=regions)
    assert type(encoder) is ImageBertModel


def test_the_shipped_text_init_plan_starts_the_text_side_from_minilm() -> None:
    from safetensors.torch import load_file

    from pretrain.regions import ClipGridRegions
    from pretrain.synthetic import tiny_clip
    from pretrain.text import default_bert_path
    from pretrain.trainer import build_model

    plan = load_plan(DEMO_PLAN.with_name("text_init.yaml"))
    assert plan.text_model == "default"
    clip, preprocess, clip_tokenizer = tiny_clip("vit")
    regions = ClipGridRegions(clip, preprocess, clip_tokenizer, vocabulary=["circle", "square"])
    model = build_model(plan, regions, load_tokenizer())
    minilm = load_file(os.path.join(default_bert_path(), "model.safetensors"))
    minilm = {k.removeprefix("bert."): v for k, v in minilm.items()}
    layers = model.config.num_hidden_layers
    assert f"encoder.layer.{layers - 1}.output.dense.weight" in minilm  # every layer has a source
    assert f"encoder.layer.{layers}.output.dense.weight" not in minilm  # and none is left out
    torch.testing.assert_close(
        model.imagebert.embeddings.word_embeddings.weight,
        minilm["embeddings.word_embeddings.weight"],
    )
    torch.testing.assert_close(
        model.imagebert.layers[layers - 1].output.weight,
        minilm[f"encoder.layer.{layers - 1}.output.dense.weight"],
    )
