"""run_bench: color a benchmark's black-and-white sets with the pipeline and evaluate them (Table 1 layout)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from engine.core.options import InputStyle, RunSettings
from engine.core.errors import InputError
from engine.evaluation.bench_data import BENCH_SETS, SAME_STYLE, Bench, link_or_copy
from engine.evaluation.folders import MetricModels
from engine.evaluation.report import EvaluationReport, results_table
from engine.core.events import EventSink, ignore

RESULT_VERSION = 1


@dataclass(frozen=True)
class BenchRunSettings:
    """How the benchmark pages are colored (the run options; the input style is per set) and scored."""

    run: RunSettings = RunSettings()
    sets: tuple[str, ...] = BENCH_SETS
    input_style: str = InputStyle.SCREEN  # an InputStyle, or SAME_STYLE
    metrics: tuple[str, ...] = ("clip-is", "psnr", "ssim")
    metric_models: MetricModels = MetricModels()
    method: str = ""
    resume: bool = False

    def pipeline_style(self, bench_set: str) -> str:
        return bench_set if self.input_style == SAME_STYLE else self.input_style

    def label(self) -> str:
        if self.method:
            return self.method
        from engine.models.sources import random_weights_kind

        extras = [str(self.run.procedure), f"input style {self.input_style}"]
        kind = random_weights_kind(self.run.models)
        if kind:
            extras.append("tiny random models" if kind == "tiny" else "random weights: timing only")
        return f"ColorFlow ({', '.join(extras)})"

    def pipeline_settings(self, bench_set: str):
        from engine.pipelines.settings import pipeline_settings

        return pipeline_settings(replace(self.run, input_style=self.pipeline_style(bench_set)))

    def check(self, bench: Bench):
        """Everything checkable before a model loads (no torch); returns the checked model paths
        (None for tiny), so the run does not resolve the source a second time."""
        from engine.core.devices import precheck_device
        from engine.models.sources import check_models

        styles = [InputStyle.SCREEN, InputStyle.GRAY, SAME_STYLE]  # the benchmark sets are toned/gray pages
        if self.input_style not in styles:
            raise InputError(f"--input-style must be one of {', '.join(styles)}, got {self.input_style!r} (the "
                             "benchmark sets are screentoned and gray pages; line-art styles and auto are not benchmarked)")
        if not self.sets:
            raise InputError("no benchmark set chosen")
        missing = [s for s in self.sets if s not in bench.sets]
        if missing:
            raise InputError(f"BENCH {bench.root} has no bw/{missing[0]}/ in every chapter (sets found: "
                             f"{', '.join(bench.sets)}); choose them with --sets")
        for bench_set in self.sets:
            self.pipeline_settings(bench_set).check()
        if "fid" in self.metrics:
            pages = sum(1 for c in bench.chapters for p in c.gt.iterdir() if p.is_file())
            if pages < 2:
                raise InputError(f"FID needs at least 2 test pages; BENCH {bench.root} has {pages}")
        precheck_device(self.run.device)
        models = check_models(self.run.models)
        check_metric_weights(self.metrics, self.metric_models)
        return models


def check_metric_weights(metrics: Sequence[str], models: MetricModels) -> None:
    """Find the weight files behind the chosen metrics now, so a missing one fails before hours
    of coloring (evaluate_folders finds them again when it loads them)."""
    if "fid" in metrics:
        from engine.evaluation.fid import find_inception_weights

        find_inception_weights(models.fid_weights)
    if "as" in metrics:
        from engine.evaluation.aesthetic import find_aesthetic_clip, find_head_weights

        find_head_weights(models.aesthetic_weights)
        find_aesthetic_clip(models.aesthetic_clip)
    if "clip-is" in metrics:
        from engine.models.sources import check_models

        check_models(models.clip_models)


@dataclass
class BenchResult:
    """The Table 1 rows of one run (one per set), what failed, and where the predictions are."""

    reports: list[EvaluationReport]
    out: Path
    bench: Path
    settings: dict[str, Any]
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # set -> {chapter/page: reason}
    seconds: dict[str, float] = field(default_factory=dict)  # set -> coloring wall time
    pages: dict[str, int] = field(default_factory=dict)  # set -> pages colored

    def to_markdown(self) -> str:
        lines = [results_table(self.reports), ""]
        for report in self.reports:
            style = report.input_style
            rate = self.pages.get(style, 0) * 3600 / self.seconds[style] if self.seconds.get(style) else 0.0
            lines.append(f"- {style}: {len(report.images)} pages scored, {len(self.failed.get(style, {}))} failed, "
                         f"colored in {self.seconds.get(style, 0.0):.1f} s ({rate:.0f} pages/hour); "
                         f"predictions in {report.pred_dir}")
            for name, reason in self.failed.get(style, {}).items():
                lines.append(f"  - failed {name}: {reason}")
        if self.settings.get("tiny"):
            lines.append("- tiny random-weight models: the numbers only show that the benchmark runs")
        elif self.settings.get("random_weights"):
            from engine.models.sources import random_weights_notice

            lines.append(f"- {random_weights_notice(self.settings['random_weights'])}: the quality numbers mean nothing")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RESULT_VERSION,
            "bench": str(self.bench),
            "out": str(self.out),
            "settings": self.settings,
            "table": results_table(self.reports),
            "reports": [r.to_dict() for r in self.reports],
            "failed": self.failed,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "pages": self.pages,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)


def _settings_record(settings: BenchRunSettings) -> dict[str, Any]:
    from engine.models.sources import is_tiny, random_weights_kind

    run = settings.run
    return {
        "method": settings.label(), "models": run.models, "tiny": is_tiny(run.models),
        "random_weights": random_weights_kind(run.models),
        "device": str(run.device), "sets": list(settings.sets), "input_style": str(settings.input_style),
        "procedure": str(run.procedure), "steps": run.steps, "size": run.size,
        "seed": run.seed, "low_vram": run.low_vram, "keep_ink": run.keep_ink,
        "metrics": list(settings.metrics),
    }


def _collect_predictions(project, chapter, target: Path) -> None:
    """Each colored page of a chapter's project, renamed like its ground truth into `target`;
    a prediction of another size (the official procedure's 1.5x working size) is resized to it."""
    from PIL import Image

    from engine.io.chapter import ImageSource, image_header, load_image
    from engine.io.fileio import atomic_save_image

    gt_files = {p.stem: p for p in chapter.gt.iterdir() if p.is_file()}
    for page in project.pages:
        colored = page.outputs.get("colored")
        stem = Path(page.name).stem
        if page.status != "done" or not colored or stem not in gt_files:
            continue
        source = project.folder / colored
        gt_size = image_header(ImageSource(gt_files[stem])).size
        if image_header(ImageSource(source)).size != gt_size:
            pred = load_image(ImageSource(source), "RGB").image
            atomic_save_image(pred.resize(gt_size, Image.BICUBIC), target / f"{stem}.png")
        else:
            link_or_copy(source, target / f"{stem}.png")


def run_bench(bench: Bench, out: str | Path, settings: BenchRunSettings, emit: EventSink = ignore) -> BenchResult:
    """Color every chapter's bw/<set>/ pages with its refs/ (one pipeline, loaded once), collect
    the predictions under OUT/pred/<set>/<chapter>/, mirror gt/ under OUT/gt/<chapter>/ and
    evaluate each set: one Table 1 row per set. Chapter projects (for --resume) live in
    OUT/runs/<set>/<chapter>/."""
    from engine.core.devices import pick_device
    from engine.io.chapter import list_images, open_chapter
    from engine.io.projectlock import ProjectLock
    from engine.io.storage import check_output_folder
    from engine.pipelines.chapter import colorize_chapter
    from engine.pipelines.page import load_pipeline
    from engine.project.state import ChapterProject

    models = settings.check(bench)
    root = Path(out).expanduser().resolve()
    check_output_folder(root)
    result = BenchResult([], root, bench.root, _settings_record(settings))
    with ProjectLock(root).acquire():
        for chapter in bench.chapters:
            for gt in chapter.gt.iterdir():
                if gt.is_file():
                    link_or_copy(gt, root / "gt" / chapter.name / gt.name)
        run = settings.run
        screen = any(settings.pipeline_style(s) == InputStyle.SCREEN for s in settings.sets)
        pipeline = load_pipeline(models or run.models, pick_device(run.device), low_vram=run.low_vram, cache_dir=run.cache_dir,
                                 input_style=InputStyle.SCREEN if screen else InputStyle.GRAY)
        for bench_set in settings.sets:
            pipeline_settings = settings.pipeline_settings(bench_set)
            predictions = root / "pred" / bench_set
            shutil.rmtree(predictions, ignore_errors=True)  # only this run's pages are scored
            result.failed[bench_set] = {}
            start = time.perf_counter()
            done = 0
            for chapter in bench.chapters:
                pages = open_chapter(chapter.bw(bench_set))
                references = list_images([chapter.references])
                project = ChapterProject.open_or_create(root / "runs" / bench_set / chapter.name)
                report = colorize_chapter(pages, references, pipeline, project, settings=pipeline_settings, emit=emit,
                                          resume=settings.resume)
                done += len(report.done) + len(report.skipped)
                for name, reason in report.failed.items():
                    result.failed[bench_set][f"{chapter.name}/{name}"] = reason
                _collect_predictions(project, chapter, predictions / chapter.name)
            result.seconds[bench_set] = time.perf_counter() - start
            result.pages[bench_set] = done
        del pipeline  # the metrics' networks get the memory
        from engine.core.offload import free_memory

        free_memory()
        from engine.evaluation.folders import evaluate_folders, pair_folders

        for bench_set in settings.sets:
            predictions = root / "pred" / bench_set
            predictions.mkdir(parents=True, exist_ok=True)
            if pair_folders(predictions, root / "gt").pairs:
                report = evaluate_folders(predictions, root / "gt", settings.metrics, settings.metric_models,
                                          method=settings.label(), input_style=bench_set)
            else:  # every page failed: a row of "-", the failures listed
                report = EvaluationReport(settings.metrics, [], {}, settings.label(), bench_set, str(predictions),
                                          str(root / "gt"), pair_folders(predictions, root / "gt").missing_predictions)
            result.reports.append(report)
    return result
