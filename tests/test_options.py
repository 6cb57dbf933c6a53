"""Every user run option is declared once: each command spells it alike with the same choices and
default, one function turns options into pipeline settings, and the resume key stays the one of
existing projects. Expectations come from the README's command contract and issue 21, by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PIL import Image

from engine.cli.main import build_parser
from engine.core.errors import InputError

DEVICES = ["auto", "cuda", "mps", "cpu"]
# flag -> (choices, default) as the command contract gives them (DESIGN.md "Commands", README)
CONTRACT = {
    "--models": (None, "official"),
    "--device": (DEVICES, "auto"),
    "--steps": (None, 10),
    "--guidance": (None, None),  # issue 24: the page's family's official default, 7.5 (SD) or 4.5 (PixArt)
    "--seed": (None, 0),
    "--size": (None, None),
    "--input-style": (["screen", "gray", "sketch", "sketch-shading", "auto"], "screen"),  # issue 24
    "--procedure": (["ours", "official"], "ours"),
    "--output-size": (["page", "gsrp"], None),
    "--keep-ink": (None, None),  # on, off with the official procedure
    "--low-vram": (None, False),
    "--compile": (None, False),  # opt-in torch.compile (issue 23)
    "--decode": (["canvas", "page"], "canvas"),
    "--vae-tiling": (None, False),
    "--gsrp-batchnorm": (["batch", "running"], "batch"),
    "--batch-pages": (None, 1),  # issue 23: pages per denoising call
    "--max-vram": (None, None),  # issue 23: GiB, no limit
    "--format": (["cbz", "png", "ora", "psd"], None),  # png, or cbz when OUT ends in .cbz
    "--cache-dir": (None, None),
    "--series": (None, None),  # issue 25: a series library's folder
    "--rolling-refs": (None, False),  # issue 25: accepted pages join the references
    "--ray": (None, None),  # issue 26: off; --ray alone is a local Ray, --ray ADDRESS a cluster
    "--workers": (None, None),  # issue 26: one per GPU Ray sees
}
RUN = {"--models", "--device", "--cache-dir"}
CHAPTER = RUN | {"--size", "--input-style", "--seed", "--procedure", "--series", "--rolling-refs"}
# The run options each command takes: the ones its help and the README describe.
COMMAND_OPTIONS = {
    "retrieve": CHAPTER,
    "colorize": CHAPTER | {"--steps", "--guidance", "--output-size", "--keep-ink", "--low-vram", "--compile", "--decode",
                           "--vae-tiling", "--gsrp-batchnorm", "--format", "--batch-pages", "--max-vram",
                           "--ray", "--workers"},  # issue 26
    "demo": set(),
    "models make-tiny": {"--seed"},
    "models make-random": {"--seed"},
    "models download": set(),
    "models verify": {"--models"},
    "models convert": {"--models"},
    "models list": {"--size"},  # of the memory estimate
    "models layout": {"--models"},
    "models probe": {"--models", "--device", "--steps", "--size"},
    "train prepare": {"--models", "--device", "--size", "--seed"},
    "train icp": {"--models", "--device", "--seed", "--steps"},
    "train gsrp": {"--models", "--device", "--seed", "--steps", "--input-style"},
    "bench retrieval": set(),
    "series new": set(),  # issue 25: the series library's own commands take no run options
    "series add": set(),
    "series list": set(),
    "check-consistency": set(),
    "bench flops": {"--size", "--steps", "--input-style"},
    "bench pages": {"--models", "--device", "--steps", "--size", "--input-style", "--seed", "--ray", "--workers"},
    "bench speedups": {"--models", "--device", "--size"},
    "eval folders": {"--models", "--device", "--input-style"},
    "eval make-bench": {"--models", "--device", "--seed"},
    "eval bench": RUN | {"--size", "--input-style", "--seed", "--procedure", "--steps", "--keep-ink", "--low-vram"},
}
# Where a command means something else by a run option, and says so in its help.
DIFFERENT = {
    ("train icp", "--steps"): (None, 1000),  # optimizer steps
    ("train gsrp", "--steps"): (None, 30000),
    ("bench pages", "--steps"): (None, None),  # 10; 2 with --models tiny
    ("bench speedups", "--size"): (None, "256x256"),  # any multiple of 32: short CPU runs
    ("eval folders", "--models"): (None, None),  # CLIP-IS only when given
    ("models layout", "--models"): (None, None),  # files read only when given; else the networks built
    ("models list", "--size"): (None, "512x800"),  # the memory estimate's size
    ("eval folders", "--input-style"): (["screen", "gray", "sketch", "sketch-shading"], None),  # the Input column
    ("retrieve", "--input-style"): (["screen", "gray", "sketch", "sketch-shading"], "screen"),  # auto: colorize only
    ("bench pages", "--input-style"): (["screen", "gray", "sketch", "sketch-shading"], "screen"),
    ("bench flops", "--input-style"): (["screen", "gray", "sketch", "sketch-shading"], "screen"),  # the path counted
    ("train gsrp", "--input-style"): (["screen", "gray"], "screen"),  # the SD family's GSRP
    ("eval bench", "--input-style"): (["screen", "gray", "same"], "screen"),  # same: each set's own style
}


def commands(parser: argparse.ArgumentParser, path: str = ""):
    """(command path, parser) of every command and subcommand."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path, parser
    for action in subparsers:
        for name, child in action.choices.items():
            yield from commands(child, f"{path} {name}".strip())


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


ALL = dict(commands(build_parser()))


def test_every_command_is_checked():
    assert set(ALL) == set(COMMAND_OPTIONS)


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_each_command_takes_its_run_options_with_the_contracts_choices_and_default(command):
    actions = option_actions(ALL[command])
    assert set(actions) & set(CONTRACT) == COMMAND_OPTIONS[command]
    for flag in COMMAND_OPTIONS[command]:
        choices, default = DIFFERENT.get((command, flag), CONTRACT[flag])
        action = actions[flag]
        assert (list(action.choices) if action.choices else None) == choices, (command, flag)
        assert action.default == default, (command, flag)


@pytest.mark.parametrize("command", sorted(COMMAND_OPTIONS))
def test_refs_means_reference_paths_in_every_command(command):
    actions = option_actions(ALL[command])
    assert "--gray-input" not in actions  # one spelling: --input-style
    if "--refs" in actions:
        assert actions["--refs"].nargs == "+" and actions["--refs"].type is None
        assert actions["--refs"].required == ("--series" not in actions)  # issue 25: the library's references serve


def test_help_says_the_defaults_and_ranges():
    colorize = " ".join(ALL["colorize"].format_help().split())
    assert "1 to 100" in colorize and "default: 10" in colorize
    # issue 24: unset guidance is each family's official default (SKETCH.md: PixArt 4.5, SD 7.5)
    assert "default: auto: the official default of the page's model family, 7.5 (screen, gray) or 4.5" in colorize
    assert "--out" in colorize and ".cbz" in colorize
    seed = option_actions(ALL["retrieve"])["--seed"].help
    assert f"0 to {2**63 - 1}" in seed


def test_official_procedure_means_no_keep_ink_and_the_gsrp_output_size():
    from engine.core.options import RunSettings
    from engine.pipelines.settings import pipeline_settings

    ours = pipeline_settings(RunSettings())
    assert (ours.keep_ink, ours.output_size, ours.procedure, ours.colorize.decode) == (True, "page", "ours", "canvas")
    official = pipeline_settings(RunSettings(procedure="official", seed=9))
    assert (official.keep_ink, official.output_size) == (False, "gsrp")
    assert official.colorize.procedure == official.upscale.procedure == "official"
    assert official.colorize.seed == official.upscale.seed == 9
    assert (ours.batch_pages, official.batch_pages) == (1, 1)
    for conflict in ({"keep_ink": True}, {"output_size": "page"}, {"decode": "page"}, {"batch_pages": 2}):
        with pytest.raises(InputError, match="official"):
            pipeline_settings(RunSettings(procedure="official", **conflict))
    chosen = pipeline_settings(RunSettings(keep_ink=False, output_size="gsrp", size="256x384"))
    assert (chosen.keep_ink, chosen.output_size, str(chosen.size)) == (False, "gsrp", "256x384")


@pytest.mark.parametrize("changes, message", [
    ({"device": "gpu"}, "device"), ({"procedure": "fast"}, "procedure"), ({"input_style": "color"}, "input style"),
    ({"steps": 0}, "steps"), ({"steps": 101}, "steps"), ({"seed": -1}, "seed"), ({"seed": 2**63}, "seed"),
    ({"export_format": "pdf"}, "format"), ({"guidance": -1.0}, "guidance"),
])
def test_values_outside_the_declared_ones_are_refused_in_one_line(changes, message):
    from engine.core.options import RunSettings

    with pytest.raises(InputError, match=message) as caught:
        RunSettings(**changes)
    assert "\n" not in str(caught.value)


def test_options_loaded_as_text_become_the_engines_enums():
    from engine.core.options import Device, InputStyle, Procedure, RunSettings, StyleChoice

    options = RunSettings(device="cpu", procedure="official", input_style="gray")
    assert options.device is Device.CPU and options.procedure is Procedure.OFFICIAL
    assert options.input_style is StyleChoice.GRAY and options.input_style == InputStyle.GRAY  # the choices: styles + auto


def _key_inputs():
    """A page and its retrieval made by hand (no model, no generated data that could change)."""
    from engine.io.chapter import ImageSource, PageImage
    from engine.core.geometry import WorkSize
    from engine.rap.retrieval import Candidate, PageRetrieval, Pick

    size = WorkSize(256, 384)
    canvas = Image.new("RGB", size.canvas, (10, 20, 30))
    canvas.paste((200, 100, 50), (0, 0, 64, 64))
    page = PageImage(ImageSource(Path("/chapter/1.png")), Image.new("L", (300, 450), 128), "a" * 64)
    picks = [[Pick(Candidate("/refs/a.png", "TL", (0, 0, 192, 288)), 0.9),
              Pick(Candidate("/refs/b.png", "full", None), 0.5)]]
    retrieval = PageRetrieval("1.png", size, None, Image.new("RGB", size.canvas), picks, canvas,
                              Image.new("L", size.canvas))
    return page, retrieval


# Computed on HEAD commit 44b3765 (before options were declared once) from the same page and
# retrieval with PipelineSettings built by hand: ColorizeSettings(steps=4, seed=7,
# guidance_scale=5.0) + UpscaleSettings(seed=7), keep-ink, 256x384, gray, output page; the
# official procedure with seed 123 (no keep-ink, output gsrp, screen); and every default.
# Existing projects resume only while these stay the same.
HEAD_KEYS = {
    "ours": "0c7d25bd5adf4eca0fb5",
    "official": "c4e5287d8d4a93d7be2d",
    "defaults": "9afd294e52d81794d1cf",
}


def test_resume_key_of_known_settings_is_the_one_existing_projects_hold():
    from engine.core.options import RunSettings
    from engine.pipelines.settings import pipeline_settings

    page, retrieval = _key_inputs()
    options = {
        "ours": RunSettings(steps=4, seed=7, guidance=5.0, size="256x384", input_style="gray"),
        "official": RunSettings(seed=123, procedure="official"),
        "defaults": RunSettings(),
    }
    keys = {name: pipeline_settings(o).key(page, retrieval, "models-a|clip-a") for name, o in options.items()}
    assert keys == HEAD_KEYS


def test_project_file_run_options_take_only_the_declared_values(tmp_path):
    import json

    from engine.project.state import ChapterProject
    from engine.project.store import PROJECT_FILE
    from engine.core.errors import ColorFlowError

    project = ChapterProject.open_or_create(tmp_path / "p")
    project.settings.update(input_style="gray", procedure="official", output_size="gsrp")
    project.save()
    assert ChapterProject.load(tmp_path / "p").settings["procedure"] == "official"
    path = tmp_path / "p" / PROJECT_FILE
    data = json.loads(path.read_text())
    data["settings"]["procedure"] = "fast"
    path.write_text(json.dumps(data))
    with pytest.raises(ColorFlowError, match="settings.procedure"):
        ChapterProject.load(tmp_path / "p")
