"""Input style per page (issue 24, deliverable 5): the guidance default follows the page's model
family (the official pipelines' 7.5 and 4.5, reference/SKETCH.md), a page's own style is kept in
the project (format 4) and in its resume key, auto applies a suggestion per page and says why, and
a chapter mixing styles prepares each page with its own style and loads each model set once, the
idle one parked on the CPU."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.errors import ProjectFileError
from engine.core.events import Notice
from engine.core.geometry import WorkSize
from engine.core.options import RunSettings
from engine.io.chapter import list_images, open_chapter
from engine.io.demo import make_demo_chapter
from engine.pipelines.settings import pipeline_settings
from engine.project.state import ChapterProject
from engine.project.store import PROJECT_FILE

# The official pipelines' default guidance (reference/SKETCH.md "Pipeline call": PixArt 4.5, "NOT 7.5 as
# in the SD/gray mode").
OFFICIAL_GUIDANCE = {"screen": 7.5, "gray": 7.5, "sketch": 4.5, "sketch-shading": 4.5}


def _key(settings) -> str:
    page = SimpleNamespace(sha256="0" * 64)
    retrieval = SimpleNamespace(work_size=WorkSize(256, 384), picks=[], canvas=Image.new("RGB", (8, 8)))
    return settings.key(page, retrieval, "models")


def test_guidance_unset_is_the_official_default_of_each_pages_family():
    assert RunSettings().guidance is None
    for style, official in OFFICIAL_GUIDANCE.items():
        assert pipeline_settings(RunSettings(input_style=style)).colorize.guidance_scale == official, style
        assert pipeline_settings(RunSettings(input_style=style, guidance=3.0)).colorize.guidance_scale == 3.0
    # a chapter's settings given to a page of another style (its own, or auto's pick)
    chapter = pipeline_settings(RunSettings(input_style="screen"))
    assert chapter.for_style("sketch").colorize.guidance_scale == 4.5
    assert chapter.for_style("sketch").input_style == "sketch"
    chosen = pipeline_settings(RunSettings(input_style="screen", guidance=2.0))
    assert chosen.for_style("sketch-shading").colorize.guidance_scale == 2.0  # a chosen guidance is kept


def test_guidance_help_and_the_settings_dialog_say_the_family_defaults():
    from engine.cli.main import build_parser

    parser = build_parser()
    colorize = next(a for a in parser._subparsers._group_actions[0].choices["colorize"]._actions
                    if "--guidance" in a.option_strings)
    assert colorize.default is None and "7.5" in colorize.help and "4.5" in colorize.help


def test_resume_key_holds_the_guidance_a_page_is_colored_with():
    unset, explicit = pipeline_settings(RunSettings(input_style="screen")), pipeline_settings(
        RunSettings(input_style="screen", guidance=7.5))
    assert _key(unset) == _key(explicit)  # the same pixels: a resumed run keeps the page
    assert _key(unset) != _key(pipeline_settings(RunSettings(input_style="screen", guidance=4.5)))
    sketch = pipeline_settings(RunSettings(input_style="screen")).for_style("sketch")
    assert _key(sketch) == _key(pipeline_settings(RunSettings(input_style="sketch", guidance=4.5)))


def test_a_pages_style_is_in_its_resume_key():
    chapter = pipeline_settings(RunSettings(input_style="screen", guidance=7.5))
    keys = {style: _key(chapter.for_style(style)) for style in OFFICIAL_GUIDANCE}
    assert len(set(keys.values())) == 4


def test_page_style_rules():
    from engine.project.page_styles import page_style

    assert page_style(None, "screen") == "screen"
    assert page_style("sketch", "screen") == "sketch"  # the page's own over the chapter's
    assert page_style("gray", "auto", {"style": "sketch", "reason": "r"}) == "gray"
    assert page_style(None, "auto", {"style": "sketch", "reason": "r"}) == "sketch"
    assert page_style(None, "auto") is None  # no suggestion yet: the run makes one


def test_a_pages_own_style_is_saved_survives_reopen_and_older_files_migrate(tmp_path):
    project = ChapterProject(folder=tmp_path / "p")
    project.sync_pages([("1.png", "/c/1.png"), ("2.png", "/c/2.png")])
    project.set_page_style("2.png", "sketch-shading")
    project.record_suggestion("1.png", "sketch", "93% of pixels white or line")
    for bad in ("auto", "pencil"):
        with pytest.raises(ValueError, match="input style"):
            project.set_page_style("1.png", bad)
    project.save()
    saved = json.loads((project.folder / PROJECT_FILE).read_text())
    assert saved["version"] == 5  # issue 25 made it 5
    assert saved["pages"][1]["input_style"] == "sketch-shading" and "input_style" not in saved["pages"][0]
    again = ChapterProject.load(project.folder)
    assert again.page("2.png").input_style == "sketch-shading" and again.page("1.png").input_style is None
    assert again.page("1.png").suggested == {"style": "sketch", "reason": "93% of pixels white or line"}
    assert again.page_style("2.png", "screen") == "sketch-shading" and again.page_style("1.png", "auto") == "sketch"
    again.set_page_style("2.png", None)  # back to the chapter's
    assert again.page_style("2.png", "gray") == "gray"

    v3 = {"format": "colorflow-project", "version": 3, "pages": [{"name": "1.png", "source": "/c/1.png"}]}
    old = tmp_path / "old"
    old.mkdir()
    (old / PROJECT_FILE).write_text(json.dumps(v3))
    assert ChapterProject.load(old).page("1.png").input_style is None
    bad = dict(v3, version=4, pages=[{"name": "1.png", "source": "/c/1.png", "input_style": "pencil"}])
    (old / PROJECT_FILE).write_text(json.dumps(bad))
    with pytest.raises(ProjectFileError, match=r"pages\[0\]\.input_style"):
        ChapterProject.load(old)


# --- the chapter loop -------------------------------------------------------------------------

@dataclass
class Seen:
    """What each page was prepared and colored with, and which model set colored it."""

    prepared: dict = field(default_factory=dict)  # page -> PreparedPage.style
    colored_by: dict = field(default_factory=dict)  # page -> model set
    placed: list = field(default_factory=list)  # (model set, "cpu" | "device")


def _watched(pipeline, name: str, seen: Seen):
    color_batch = pipeline.color_batch

    def watched(jobs, **kwargs):
        for job in jobs:
            seen.colored_by[job.page.source.name] = name
            seen.prepared[job.page.source.name] = job.prepared.style
        return color_batch(jobs, **kwargs)

    pipeline.color_batch = watched
    pipeline.set_name = name
    return pipeline


@pytest.fixture
def three_pages(tmp_path):
    chapter_dir, refs_dir = make_demo_chapter(tmp_path / "demo", pages=3, refs=2, size=(128, 192))
    return open_chapter(chapter_dir), list_images([refs_dir])


def _families(make_tiny_pipeline, tmp_path, seen: Seen, monkeypatch):
    """FamilyPipelines whose two model sets are the tiny SD pipeline twice: "screen" pages one set and
    "gray" pages a second, fake family (stand-in until the PixArt family runs in the loop)."""
    from engine.pipelines.families import FamilyPipelines

    loads = []

    def load(style):
        loads.append(str(style))
        return _watched(make_tiny_pipeline(tmp_path / "cache", screen=True), {"screen": "A", "gray": "B"}[style], seen)

    shared = make_tiny_pipeline(tmp_path / "cache", screen=True)
    families = FamilyPipelines(load, lambda style: shared.preparer, shared.retriever, "tiny",
                               set_of=lambda style: {"screen": "A", "gray": "B"}[style])
    place = families._place  # (place_models itself: test_place_models_...)
    monkeypatch.setattr(families, "_place", lambda name, *, to_cpu: (
        seen.placed.append((name, "cpu" if to_cpu else "device")), place(name, to_cpu=to_cpu)))
    return families, loads


def test_a_chapter_mixing_styles_prepares_each_page_with_its_own_and_loads_each_set_once(
        three_pages, make_tiny_pipeline, tmp_path, monkeypatch):
    from engine.pipelines.chapter import colorize_chapter

    chapter, refs = three_pages
    seen = Seen()
    families, loads = _families(make_tiny_pipeline, tmp_path, seen, monkeypatch)
    project = ChapterProject(folder=tmp_path / "out")
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.set_page_style("2.png", "gray")  # a gray insert in a screen chapter
    settings = pipeline_settings(RunSettings(steps=1, seed=3, size="256x384", input_style="screen"))
    report = colorize_chapter(chapter, refs, families, project, settings=settings, overlap=False)
    assert report.done == ["1.png", "2.png", "3.png"] and not report.failed
    assert seen.prepared == {"1.png": "screen", "2.png": "gray", "3.png": "screen"}
    assert seen.colored_by == {"1.png": "A", "2.png": "B", "3.png": "A"}
    assert sorted(loads) == ["gray", "screen"] and families.loads == {"A": 1, "B": 1}
    # before page 2 (set B) set A leaves the device; before page 3, B leaves and A comes back
    assert seen.placed == [("A", "cpu"), ("B", "cpu"), ("A", "device")]
    assert report.styles == {"1.png": "screen", "2.png": "gray", "3.png": "screen"}


@pytest.fixture
def suggest_stand_in(monkeypatch):
    """STAND-IN for H1's engine.preprocess.style_suggest.suggest_style in this test only: "gray" for
    a page darker than mid-gray on average, else "screen" (the real rule is H1's, tested there)."""
    @dataclass
    class StyleSuggestion:
        style: str
        reason: str
        stats: dict

    def suggest_style(page):
        mean = float(np.asarray(page.convert("L")).mean())
        style = "gray" if mean < 128 else "screen"
        return StyleSuggestion(style, f"mean {mean:.0f}", {"mean": mean})

    try:
        import engine.preprocess.style_suggest as module
    except ImportError:
        module = types.ModuleType("engine.preprocess.style_suggest")
        monkeypatch.setitem(sys.modules, "engine.preprocess.style_suggest", module)
    monkeypatch.setattr(module, "suggest_style", suggest_style, raising=False)
    return suggest_style


def test_auto_applies_a_suggestion_per_page_and_says_why(tmp_path, make_tiny_pipeline, suggest_stand_in, monkeypatch):
    from engine.pipelines.chapter import colorize_chapter

    pages = tmp_path / "pages"
    pages.mkdir()
    Image.new("L", (128, 192), 60).save(pages / "1.png")  # dark: the stand-in says gray
    Image.new("L", (128, 192), 230).save(pages / "2.png")  # light: screen
    _, refs_dir = make_demo_chapter(tmp_path / "demo", pages=1, refs=2, size=(128, 192))
    chapter, refs = open_chapter([pages]), list_images([refs_dir])
    seen = Seen()
    families, _ = _families(make_tiny_pipeline, tmp_path, seen, monkeypatch)
    project = ChapterProject(folder=tmp_path / "out")
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.set_page_style("2.png", "gray")  # a page's own style is not second-guessed
    events = []
    settings = pipeline_settings(RunSettings(steps=1, seed=3, size="256x384", input_style="auto"))
    report = colorize_chapter(chapter, refs, families, project, settings=settings, emit=events.append, overlap=False)
    assert report.done == ["1.png", "2.png"]
    assert seen.prepared == {"1.png": "gray", "2.png": "gray"}
    notes = [(e.page, e.message) for e in events if isinstance(e, Notice)]
    assert notes == [("1.png", "input style gray (auto: mean 60)")]
    again = ChapterProject.load(project.folder)
    assert again.page("1.png").suggested == {"style": "gray", "reason": "mean 60"} and again.page("2.png").suggested is None
    assert again.settings["input_style"] == "auto"


def test_place_models_moves_the_sets_modules_and_is_a_no_op_on_the_cpu():
    from engine.core.offload import place_models

    net = torch.nn.Linear(2, 2)
    assert place_models(SimpleNamespace(device=torch.device("cpu"), unet=net, offload=None), "cpu") is False

    class Hooks:
        calls = 0

        def offload(self):
            Hooks.calls += 1

    hooked = SimpleNamespace(device=torch.device("meta"), unet=net, offload=Hooks())
    assert place_models(hooked, "cpu") is True and Hooks.calls == 1  # low VRAM: the hooks send it back
    assert net.weight.device.type == "cpu"
    plain = SimpleNamespace(device=torch.device("meta"), unet=net, runner=torch.nn.Sequential(net), offload=None)
    assert place_models(plain, "meta") is True and net.weight.device.type == "meta"


def test_colorize_auto_on_the_command_line_says_each_pages_style_and_reports_it(tiny_models_dir, tmp_path, capsys,
                                                                                 suggest_stand_in):
    from engine.cli.main import main

    pages = tmp_path / "pages"
    pages.mkdir()
    Image.new("L", (128, 192), 60).save(pages / "1.png")  # dark: the stand-in says gray
    _, refs_dir = make_demo_chapter(tmp_path / "demo", pages=1, refs=1, size=(128, 192))
    out = tmp_path / "out"
    code = main(["colorize", str(pages), "--refs", str(refs_dir), "--out", str(out), "--models", str(tiny_models_dir),
                 "--size", "256x384", "--steps", "1", "--input-style", "auto", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "cache"), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "note: 1.png: input style gray (auto: mean 60)" in captured.err
    [page] = json.loads(captured.out)["pages"]
    assert page["input_style"] == "gray" and page["suggested"] == {"style": "gray", "reason": "mean 60"}


def test_a_set_that_fails_to_load_fails_its_pages_at_once_and_the_other_set_comes_back():
    from engine.core.errors import ModelError
    from engine.pipelines.families import FamilyPipelines, model_set

    assert {s: model_set(s) for s in OFFICIAL_GUIDANCE} == {
        "screen": "sd", "gray": "sd", "sketch": "pixart-sketch", "sketch-shading": "pixart-shading"}
    tried, placed = [], []

    def load(style):
        tried.append(str(style))
        if style == "sketch":
            raise ModelError("pixart/ is missing")
        return SimpleNamespace(colorizer=SimpleNamespace(components=SimpleNamespace(device=torch.device("cpu"))))

    families = FamilyPipelines(load, lambda style: None, None, "id")
    families._place = lambda name, *, to_cpu: placed.append((name, to_cpu))
    screen = families.for_style("screen")
    assert families.for_style("gray") is screen  # one SD set for both
    for _ in range(2):
        with pytest.raises(ModelError, match="pixart"):
            families.for_style("sketch")
    assert tried == ["screen", "sketch"]  # the failed load is not tried again in this run
    assert families.for_style("screen") is screen
    assert placed == [("sd", True), ("sd", False)]  # parked for the sketch page, back for the next screen one
    families.restart(load)  # a new run tries it again
    with pytest.raises(ModelError):
        families.for_style("sketch")
    assert tried == ["screen", "sketch", "sketch"] and families.loads == {"sd": 1, "pixart-sketch": 2}


def test_a_chapter_mixing_styles_colors_every_page_with_its_own_style_and_loads_each_family_once(
        tiny_models_dir, three_pages, tmp_path, monkeypatch):
    """The real loaders on the tiny models (SD1.5 + GraySD and the PixArt family), through the app's session."""
    from engine.icp.pixart_colorize import PixArtColorizer
    from engine.pipelines import page as page_module
    from engine.pipelines.session import EngineSession

    chapter, refs = three_pages
    loads, seen = [], Seen()
    real_load = page_module.load_pipeline

    def counted(*args, input_style="screen", **kwargs):
        loads.append(str(input_style))
        pipeline = real_load(*args, input_style=input_style, **kwargs)
        return _watched(pipeline, type(pipeline.colorizer).__name__, seen)

    monkeypatch.setattr(page_module, "load_pipeline", counted)
    project = ChapterProject(folder=tmp_path / "out")
    project.sync_pages([(s.name, s.ref) for s in chapter.sources])
    project.set_page_style("2.png", "sketch")  # a line-art insert in a gray chapter
    session = EngineSession()
    run = RunSettings(models=str(tiny_models_dir), device="cpu", steps=1, seed=3, size="256x384", input_style="gray",
                      cache_dir=str(tmp_path / "cache"))
    report = session.colorize(chapter, refs, project, settings=run, pages=None)
    assert report.done == ["1.png", "2.png", "3.png"] and not report.failed, report.failed
    assert seen.prepared == {"1.png": "gray", "2.png": "sketch", "3.png": "gray"}
    assert seen.colored_by == {"1.png": "Colorizer", "2.png": PixArtColorizer.__name__, "3.png": "Colorizer"}
    assert loads == ["gray", "sketch"]  # each family once, in the order their first page came
    # guidance unset: each page colored with its family's official default (SKETCH.md)
    assert [project.page(n).variations[0].guidance for n in ("1.png", "2.png", "3.png")] == [7.5, 4.5, 7.5]
    for name in ("1.png", "2.png", "3.png"):
        assert Image.open(project.output_path(name, "colored")).size == (128, 192)  # each page at its own size
    # a second run (the app's next Colorize) loads nothing; the style is in the key: all kept
    report = session.colorize(chapter, refs, project, settings=run, pages=None)
    assert report.skipped == ["1.png", "2.png", "3.png"] and loads == ["gray", "sketch"]
