"""The studio command line (issue 26): `colorize --ray [ADDRESS] [--workers N]`, `colorize --volume` and
`bench pages --ray`. Expectations come from the issue's "Done when" list and the command contract, by hand:
one project folder per chapter, the same page bytes as each chapter colored alone, exit 2 with the install
advice when Ray is missing, the official procedure refused, efficiency = ray / (workers x local)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.cli.main import build_parser, main
from engine.io.demo import make_demo_chapter
from engine.project.state import ChapterProject

STUDIO_INSTALL = 'pip install "colorflow-desktop[studio]"'  # the "optional extra"


def _tiny(models: Path) -> list[str]:
    return ["--models", str(models), "--steps", "1", "--size", "256x256", "--input-style", "gray"]


def _chapters(root: Path, names: tuple[str, ...], pages: int = 2) -> tuple[list[Path], Path]:
    """Chapter folders `names` in `root` and nothing else (each its own generated pages), and a references folder."""
    chapters, scratch = [], root.parent / f"{root.name}-generated"
    root.mkdir(parents=True)
    for index, name in enumerate(names):
        chapter, _ = make_demo_chapter(scratch / name, pages=pages, refs=1, seed=index, size=(128, 128))
        chapters.append(chapter.rename(root / name))
    _, refs = make_demo_chapter(scratch / "refs", pages=1, refs=2, seed=9, size=(128, 128))
    return chapters, refs


def _page_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture
def session_workers(ray_workers, monkeypatch) -> list[str]:
    """The CLI's Ray runs color on the session's workers (conftest `ray_workers`, started as `--ray --workers 2` with
    `_tiny` options start them) instead of starting their own: the RayExecutor each run builds from its options
    (ray_options.ray_executor) must be those workers' (same address, count and WorkerSpec; the bench's own cache
    folder aside: the workers cache nothing); the returned list logs the run entering ("start") and leaving ("stop")
    it."""
    from dataclasses import replace

    from engine.pipelines import ray_options

    build, log = ray_options.ray_executor, []

    def identity(executor):
        return executor.address, executor.requested, replace(executor.spec, cache_dir=None)

    class Held:
        def __init__(self, started):
            self.started = started

        def __enter__(self):
            log.append("start")
            return self.started

        def __exit__(self, *exc):
            log.append("stop")

    def same_workers(options, settings):
        started = ray_workers()
        assert identity(build(options, settings)) == identity(started)
        return Held(started)

    monkeypatch.setattr(ray_options, "ray_executor", same_workers)
    return log


def test_ray_flag_alone_means_a_local_ray_and_workers_need_ray(tmp_path, one_page_chapter, capsys):
    parser = build_parser()
    base = ["colorize", "ch", "--refs", "r", "--out", "o"]
    assert parser.parse_args(base).ray is None
    assert parser.parse_args([*base, "--ray"]).ray == "local"
    assert parser.parse_args([*base, "--ray=head:6379", "--workers", "3"]).ray == "head:6379"
    pages, refs = one_page_chapter
    argv = ["colorize", str(pages), "--refs", str(refs), "--out", str(tmp_path / "out"), "--models", "tiny"]
    assert main([*argv, "--workers", "2"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main([*argv, "--ray", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    # `colorize CH1 --ray CH2 ...`: argparse takes the second chapter for the address; said, not tried as one
    assert main(["colorize", str(pages), "--ray", str(refs), "--refs", str(refs), "--out", str(tmp_path / "out")]) == 2
    assert "not a Ray address" in capsys.readouterr().err
    assert main(["bench", "pages", "--workers", "2", "--models", "tiny"]) == 2  # bench pages too: --workers needs --ray
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ray_without_ray_installed_exits_2_with_the_install_advice_before_anything_loads(
        tmp_path, one_page_chapter, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, find_spec says absent
    pages, refs = one_page_chapter
    out = tmp_path / "out"
    # models that do not exist: the Ray advice must come first, before the models are even looked at
    argv = ["colorize", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(tmp_path / "none"), "--ray"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert STUDIO_INSTALL in err and str(tmp_path / "none") not in err
    assert not out.exists()


@pytest.mark.parametrize("refused, says", [(["--procedure", "official"], "official"),
                                           (["--batch-pages", "2"], "--batch-pages")])
def test_ray_refuses_the_official_procedure_and_batches_before_any_model(refused, says, tmp_path, one_page_chapter,
                                                                         capsys):
    pages, refs = one_page_chapter
    out = tmp_path / "out"
    argv = ["colorize", str(pages), "--refs", str(refs), "--out", str(out), "--models", str(tmp_path / "none"),
            "--ray", *refused]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and str(tmp_path / "none") not in err
    assert not out.exists()


def test_a_volume_folders_chapters_are_its_subfolders_and_archives_in_natural_order_never_out(tmp_path):
    import argparse
    import shutil

    from engine.cli.volume import volume_chapters
    from engine.core.errors import InputError

    chapters, _ = _chapters(tmp_path / "vol", ("ch10", "ch9"), pages=1)
    shutil.make_archive(str(tmp_path / "vol" / "ch11"), "zip", chapters[0])  # a chapter as an archive
    (tmp_path / "vol" / ".hidden").mkdir()
    (tmp_path / "vol" / "notes.txt").write_text("not a chapter")
    out = tmp_path / "vol" / "colored"  # OUT inside the volume, as a second run (--resume) finds it
    shutil.copytree(chapters[0], out / "ch10")

    def found(inputs, out=out):
        args = argparse.Namespace(input=[str(p) for p in inputs], out=out)
        return [(c.name, c.inputs, c.folder) for c in volume_chapters(args)]

    assert found([tmp_path / "vol"]) == [(name, [str(tmp_path / "vol" / file)], out / name)
                                         for name, file in (("ch9", "ch9"), ("ch10", "ch10"), ("ch11", "ch11.zip"))]
    with pytest.raises(InputError, match="two chapters are named 'ch10'"):
        found([chapters[0], out / "ch10"], out=tmp_path / "elsewhere")
    with pytest.raises(InputError, match="OUT is the folder"):
        found([tmp_path / "vol"], out=tmp_path / "v.cbz")


def test_two_chapters_in_one_ray_volume_run_each_get_their_own_project_with_every_page_done(
        session_workers, tiny_models_dir, tmp_path, capsys):
    chapters, refs = _chapters(tmp_path / "in", ("ch-a", "ch-b"))
    out = tmp_path / "volume"
    argv = ["colorize", *map(str, chapters), "--volume", "--ray", "--workers", "2", "--refs", str(refs),
            "--out", str(out), *_tiny(tiny_models_dir), "--json"]
    assert main(argv) == 0
    assert session_workers == ["start", "stop"]  # one set of workers for both chapters, stopped when the run ends
    report = json.loads(capsys.readouterr().out)
    assert [c["chapter"] for c in report["chapters"]] == ["ch-a", "ch-b"]
    for chapter, entry in zip(chapters, report["chapters"]):
        project = ChapterProject.load(out / chapter.name)  # its own project file, OUT/<chapter>/
        names = sorted(p.name for p in chapter.iterdir())
        assert sorted(p.name for p in project.pages) == names and {p.status for p in project.pages} == {"done"}
        assert sorted(entry["done"]) == names and entry["failed"] == {}
        assert len(_page_bytes(out / chapter.name)) == len(names)  # each page's PNG, exported as usual
    # --resume per chapter, here in this process (no workers to start): the pages Ray colored count as done
    assert main([a for a in argv if a not in ("--ray", "--workers", "2")] + ["--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [c["done"] for c in again["chapters"]] == [[], []]
    assert [len(c["skipped"]) for c in again["chapters"]] == [2, 2]


def test_volume_folder_without_ray_gives_each_chapters_bytes_colored_alone(tiny_models_dir, tmp_path, capsys):
    # ONE volume folder whose subfolders are the chapters, in natural order (ch2 before ch10)
    chapters, refs = _chapters(tmp_path / "vol", ("ch10", "ch2"), pages=1)
    out = tmp_path / "out"
    assert main(["colorize", str(tmp_path / "vol"), "--volume", "--refs", str(refs), "--out", str(out),
                 *_tiny(tiny_models_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["chapter"] for c in report["chapters"]] == ["ch2", "ch10"]
    for chapter in chapters:
        alone = tmp_path / "alone" / chapter.name
        assert main(["colorize", str(chapter), "--refs", str(refs), "--out", str(alone), *_tiny(tiny_models_dir)]) == 0
        assert _page_bytes(out / chapter.name) == _page_bytes(alone) != {}
    capsys.readouterr()


def test_bench_pages_ray_reports_pages_per_hour_and_the_scaling_efficiency(session_workers, tiny_models_dir,
                                                                            capsys):
    assert main(["bench", "pages", "--ray", "--workers", "2", "--models", str(tiny_models_dir), "--size", "256x256",
                 "--steps", "1", "--pages", "2", "--input-style", "gray", "--no-warmup", "--json"]) == 0
    assert session_workers == ["start", "stop"]
    result = json.loads(capsys.readouterr().out)
    local, ray = result["local"], result["ray"]
    assert result["workers"] == 2 and local["pages"] == ray["pages"] == 2
    for run in (local, ray):  # pages per hour from the run's own pages and seconds
        assert run["pages_per_hour"] == pytest.approx(run["pages"] * 3600 / run["chapter_s"], rel=1e-3)
    expected = ray["pages_per_hour"] / (2 * local["pages_per_hour"])
    assert result["efficiency"] == pytest.approx(expected, abs=1e-3)
