"""How each official model file is verified: a published sha256, a pinned hub revision, or trust
on first use; the presets say which per file, `models list` shows it, downloads follow it."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest

import engine.models.presets as presets_module
from engine.cli.main import main
from engine.core.errors import ModelError
from engine.models.hub import download
from engine.models.hub_cache import local_path
from engine.models.pins import check_pinned
from engine.models.presets import parse_preset_files, preset_files

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESETS = json.loads((REPO_ROOT / "resources" / "models" / "presets.json").read_text())
REVISION = "0123456789abcdef0123456789abcdef01234567"  # a full (40-character) hub commit


def _with(change) -> dict:
    """A copy of the shipped presets, changed by `change(official_sources)`."""
    data = copy.deepcopy(PRESETS)
    change(data["official"]["sources"])
    return data


def _use_presets(monkeypatch, data: dict) -> None:
    real = presets_module.model_config
    monkeypatch.setattr(presets_module, "model_config", lambda name: data if name == "presets" else real(name))


def test_models_list_marks_every_official_file_trust_on_first_use_and_says_why(tmp_path, monkeypatch, capsys):
    # The official facts (docs/reference/checkpoints.md) publish no sha256 for any file, and name the
    # hub commit of GraySD/ only by its 7-character prefix, which the hub cannot pin: all 20 files
    # are trust on first use.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^   (?:ok|--)\s+~?[\d.]+ [KMG]?B  (\S+)\s+(\S+)$", out, flags=re.M)
    assert len(rows) == 20 and {marker for marker, _path in rows} == {"tofu"}
    verified = [line for line in out.splitlines() if line.startswith("verified")]
    assert len(verified) == 1 and "tofu (20 files): trust on first use — " in verified[0]
    assert "main" in verified[0] and "first download" in verified[0]
    assert "a890698" in out and "40-character" in out


def test_the_shipped_presets_say_per_file_how_it_is_verified():
    for source in PRESETS["official"]["sources"].values():
        assert all(item["verify"] == "tofu" for item in source["files"])
    assert {f.verify for f in preset_files()} == {"tofu"}
    assert all(f.revision is None and f.sha256 is None for f in preset_files())


@pytest.mark.parametrize("change, words", [
    (lambda s: s["colorflow"].update(revision={"commit": "a890698", "source": "docs/reference/checkpoints.md"}),
     "full 40-character"),
    (lambda s: s["sd15"].update(revision={"commit": REVISION}), "source"),
    (lambda s: s["sd15"]["files"][0].update(verify="sha256", sha256="ab" * 31, sha256_source="a page"),
     "64 hex"),
    (lambda s: s["sd15"]["files"][0].update(verify="sha256", sha256="ab" * 32), "sha256_source"),
    (lambda s: s["sd15"]["files"][0].update(sha256="ab" * 32, sha256_source="a page"), "says tofu"),
    (lambda s: s["sd15"]["files"][0].update(verify="revision"), "no revision"),
    (lambda s: s["sd15"]["files"][0].update(verify="whatever"), "tofu, revision or sha256"),
])
def test_a_pin_that_cannot_hold_is_refused_naming_the_file(change, words):
    with pytest.raises(ModelError) as error:
        parse_preset_files(_with(change), "official")
    message = str(error.value)
    assert "presets.json" in message and words in message and "\n" not in message


def test_a_published_sha256_refuses_a_file_never_pinned_here(hub_snapshot, monkeypatch):
    lora = local_path(next(f for f in preset_files() if f.path == "GraySD/unet_lora.bin"))
    actual = hashlib.sha256(lora.read_bytes()).hexdigest()

    def publish(sha256):
        def change(sources):
            item = next(i for i in sources["colorflow"]["files"] if i["path"] == "GraySD/unet_lora.bin")
            item.update(verify="sha256", sha256=sha256, sha256_source="https://example.org/checksums")
        return change

    _use_presets(monkeypatch, _with(publish(hashlib.sha256(b"other bytes").hexdigest())))
    with pytest.raises(ModelError, match=r"unet_lora\.bin: sha256 does not match the published value"):
        check_pinned("official")  # no lock entry at all: only the published hash can tell
    _use_presets(monkeypatch, _with(publish(actual)))
    assert check_pinned("official") == 1


class FakeHub:
    """Stands in for huggingface_hub: serves `files` (path -> bytes) at any revision into the
    cache layout hf_hub_download uses for a commit (snapshots/<commit>/...), recording each call."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.calls = files, []

    def hf_hub_download(self, repo, path, cache_dir, revision=None, **_):
        self.calls.append((repo, path, revision))
        target = Path(cache_dir) / f"models--{repo.replace('/', '--')}" / "snapshots" / (revision or "main") / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.files[path])
        return str(target)

    def api(self, endpoint=None):
        hub = self

        class Api:
            def get_paths_info(self, repo, paths, expand=False, revision=None):
                hub.calls.append((repo, "paths-info", revision))
                return []  # small files: the hub reports no LFS sha256

        return Api()


def test_download_fetches_the_pinned_revision_and_checks_the_published_sha256(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    served = {"model_index.json": b'{"_class_name": "x"}', "scheduler/scheduler_config.json": b"{}"}

    def pin_sd15(sha256):
        def change(sources):
            sources["sd15"]["revision"] = {"commit": REVISION, "source": "https://example.org/release-notes"}
            for item in sources["sd15"]["files"]:
                item["verify"] = "revision"
            sources["sd15"]["files"][0].update(verify="sha256", sha256=sha256, sha256_source="https://example.org")
        return change

    hub = FakeHub(served)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", hub.api)
    _use_presets(monkeypatch, _with(pin_sd15(hashlib.sha256(served["model_index.json"]).hexdigest())))
    wanted = [f for f in preset_files() if f.path in served]
    assert [f.verify for f in wanted] == ["sha256", "revision"]
    states = download("official", files=wanted)
    assert [s.status for s in states] == ["ok", "ok"]
    assert {revision for _repo, _what, revision in hub.calls} == {REVISION}
    snapshot = tmp_path / "hf" / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5" / "snapshots"
    for file in wanted:  # found where the hub cache keeps that commit, with no refs/main at all
        assert local_path(file) == snapshot / REVISION / file.path

    _use_presets(monkeypatch, _with(pin_sd15(hashlib.sha256(b"the published file").hexdigest())))
    with pytest.raises(ModelError, match="fails its published sha256"):
        download("official", files=[f for f in preset_files() if f.path == "model_index.json"], force=True)
    assert local_path(wanted[0]) is None  # the bad download is removed
