"""Evaluation results: per-image values, set means, JSON and a Markdown table laid out like Table 1."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from engine.evaluation.metrics import ALL_METRICS, METRICS

REPORT_VERSION = 1


@dataclass
class ImageResult:
    """The values of one prediction / ground-truth pair."""

    name: str  # the shared name (relative path without extension)
    pred: str
    gt: str
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluationReport:
    """Metrics of one method and input style on one set of pages.

    `summary` holds, per metric, the mean of the per-image values (PSNR: the mean of per-image
    dB, infinite when any pair is identical) and, for FID, the value of the whole set.
    """

    metrics: tuple[str, ...]
    images: list[ImageResult]
    summary: dict[str, float]
    method: str = ""
    input_style: str = ""
    pred_dir: str = ""
    gt_dir: str = ""
    missing_predictions: list[str] = field(default_factory=list)  # in GT, no prediction
    missing_ground_truth: list[str] = field(default_factory=list)  # predicted, no GT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite values (PSNR of identical images) become the string "inf"."""
        return {
            "version": REPORT_VERSION,
            "method": self.method,
            "input_style": self.input_style,
            "pred_dir": self.pred_dir,
            "gt_dir": self.gt_dir,
            "metrics": list(self.metrics),
            "count": len(self.images),
            "summary": {key: _json_number(value) for key, value in self.summary.items()},
            "images": [
                {"name": r.name, "pred": r.pred, "gt": r.gt,
                 **{key: _json_number(value) for key, value in r.values.items()}}
                for r in self.images
            ],
            "missing_predictions": list(self.missing_predictions),
            "missing_ground_truth": list(self.missing_ground_truth),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluationReport":
        """Inverse of to_dict (to gather saved reports into one table)."""
        metrics = tuple(data["metrics"])
        images = [
            ImageResult(item["name"], item["pred"], item["gt"],
                        {k: _from_json_number(item[k]) for k in metrics if k in item})
            for item in data.get("images", [])
        ]
        return cls(
            metrics=metrics,
            images=images,
            summary={k: _from_json_number(v) for k, v in data.get("summary", {}).items()},
            method=data.get("method", ""),
            input_style=data.get("input_style", ""),
            pred_dir=data.get("pred_dir", ""),
            gt_dir=data.get("gt_dir", ""),
            missing_predictions=list(data.get("missing_predictions", [])),
            missing_ground_truth=list(data.get("missing_ground_truth", [])),
        )

    def to_markdown(self, per_image: bool = True) -> str:
        """The Table 1 row of this run, then (optionally) one row per image and what was unpaired."""
        lines = [results_table([self]), "", f"{len(self.images)} image pairs; predictions {self.pred_dir or '-'}, "
                 f"ground truth {self.gt_dir or '-'}."]
        columns = [METRICS[k] for k in ALL_METRICS if k in self.metrics and METRICS[k].per_image]
        if per_image and self.images and columns:
            lines += ["", "| Image | " + " | ".join(m.title for m in columns) + " |",
                      "|---|" + "---:|" * len(columns)]
            for result in self.images:
                cells = [format_value(m.key, result.values.get(m.key)) for m in columns]
                lines.append(f"| {_escape(result.name)} | " + " | ".join(cells) + " |")
        if self.missing_predictions:
            lines += ["", "No prediction for: " + ", ".join(map(_escape, self.missing_predictions))]
        if self.missing_ground_truth:
            lines += ["", "No ground truth for: " + ", ".join(map(_escape, self.missing_ground_truth))]
        return "\n".join(lines) + "\n"


def format_value(key: str, value: float | None) -> str:
    """A value with the paper's decimals; "-" when not computed, "∞" for an infinite PSNR."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{METRICS[key].decimals}f}"


def results_table(reports: Sequence[EvaluationReport]) -> str:
    """Markdown in the layout of the paper's Table 1: one row per (method, input style), columns
    CLIP-IS↑ FID↓ PSNR↑ SSIM↑ AS↑, "-" where a metric was not computed, and (with several
    rows of one input style) the best value of each column in bold within that style."""
    header = "| Method | Input | " + " | ".join(METRICS[k].title for k in ALL_METRICS) + " |"
    lines = [header, "|---|---|" + "---:|" * len(ALL_METRICS)]
    best: dict[tuple[str, str], float] = {}
    for key in ALL_METRICS:
        for style in {r.input_style for r in reports}:
            values = [r.summary[key] for r in reports if r.input_style == style and key in r.summary
                      and not math.isnan(r.summary[key])]
            if len(values) > 1:
                best[(style, key)] = max(values) if METRICS[key].higher_is_better else min(values)
    for report in reports:
        cells = []
        for key in ALL_METRICS:
            value = report.summary.get(key)
            text = format_value(key, value)
            if value is not None and best.get((report.input_style, key)) == value:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {_escape(report.method or '-')} | {_escape(report.input_style or '-')} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_number(value: float) -> float | str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _from_json_number(value: float | str) -> float:
    return float(value)  # float("inf") reads the string back


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
