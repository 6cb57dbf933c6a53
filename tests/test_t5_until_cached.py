"""The T5 text encoder is needed only until the official prompt's embeddings are cached: end to end on
the tiny models, through the real loaders, the folder record and the command line."""

from __future__ import annotations

import pytest

from engine.cli.main import main
from engine.core.errors import ModelError
from engine.icp.text_embeddings import CACHE_FOLDER, encoder_loads
from engine.io.demo import make_demo_chapter
from engine.models.line_art import line_art_missing
from engine.models.sources import resolve_models
from engine.pipelines.page import load_pipeline


def _t5_listed(missing) -> list[str]:
    return [f.path for f in missing if f.root == "pixart" and f.path.startswith("text_encoder/")]


def test_after_the_embeddings_are_cached_the_t5_weights_can_go_and_sketch_pages_still_run(models_copy, tmp_path,
                                                                                          capsys):
    cache = tmp_path / "cache"
    before = encoder_loads()
    load_pipeline(str(models_copy), input_style="sketch", cache_dir=cache)  # computes and caches the embeddings
    assert encoder_loads() == before + 1
    shards = sorted((models_copy / "pixart" / "text_encoder").glob("*.safetensors"))
    assert shards
    for shard in shards:
        shard.unlink()
    with pytest.raises(ModelError, match="missing"):  # the folder's record sees the deletion
        resolve_models(str(models_copy))
    assert main(["models", "verify", "--models", str(models_copy), "--accept"]) == 0
    paths = resolve_models(str(models_copy))
    assert _t5_listed(line_art_missing(paths, "sketch", tmp_path / "empty-cache")[0])  # without embeddings: needed
    assert line_art_missing(paths, "sketch", cache / CACHE_FOLDER) == ([], 0)  # with them: nothing is missing

    loads = encoder_loads()
    pages, refs = make_demo_chapter(tmp_path / "demo", pages=1, refs=2, size=(128, 192))
    capsys.readouterr()
    assert main(["colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"), "--models",
                 str(models_copy), "--steps", "1", "--size", "256x384", "--input-style", "sketch", "--cache-dir",
                 str(cache), "--format", "png"]) == 0
    assert (tmp_path / "out" / "001_1.png").is_file()
    assert encoder_loads() == loads  # T5 never loaded again
