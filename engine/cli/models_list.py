"""`colorflow models list` (the official files, the optional line-art files, licences, GPU, speed, memory) and what `models download --line-art` fetches."""

from __future__ import annotations

import json


def print_models_list(size: str = "512x800", *, as_json: bool = False) -> None:
    """Sizes, destination, free space, licences, GPU, speed and the memory estimate at `size`; no torch
    import when no GPU can be usable (devices.gpu_ruled_out) and `size` is in the shipped table."""
    if as_json:
        print(json.dumps(models_list_data(size), indent=1))
        return
    from engine.core.devices import NO_GPU, describe_device, dtype_name, resolve_auto
    from engine.io.storage import human_bytes
    from engine.models.overview import models_overview
    from engine.models.speed import last_probe, probe_line, read_probes
    from engine.core.paths import cache_dir
    from engine.models.sources import TINY_MARKER

    overview = models_overview("official")
    present = len(overview.rows) - overview.missing
    print(f"official  {present}/{len(overview.rows)} files present, {human_bytes(overview.installed_bytes)} on disk, "
          f"{human_bytes(overview.to_download_bytes)} still to download; {human_bytes(overview.total_bytes)} in all")
    for row in overview.rows:
        print(f"   {'ok' if row.installed else '--'}  {row.size_text():>10}  {row.file.verify:<8}  "
              f"{row.file.repo}/{row.file.path}")
    print(f"   total {human_bytes(overview.total_bytes)} (sizes on disk where present, else the download size)")
    for index, line in enumerate(overview.verification_lines()):
        print(f"{'verified' if index == 0 else '':<10}{line}")
    print_line_art_list()
    print(f"folder    {overview.destination} (Hugging Face cache: HF_HUB_CACHE, else HF_HOME/hub)")
    print(f"free      {overview.space_text()}")
    warning = overview.warning()
    if warning:
        print(f"WARNING   {warning}")
    print("licences  (read them before use)")
    for licence in overview.licences:
        name, details = licence.lines()
        print(f"   {name}\n      {details}")
    print(f"speed     {probe_line('official')}")
    tiny = cache_dir() / "tiny-models"
    print(f"tiny      {'generated in ' + str(tiny) if (tiny / TINY_MARKER).exists() else 'generated on first use'}; "
          f"random weights, meaningless colors; speed: {probe_line('tiny')}")
    for key in read_probes():
        if key not in ("official", "tiny") and last_probe(key):
            print(f"{key}: {probe_line(key)}")
    device = resolve_auto()
    print(f"GPU       {NO_GPU if device == 'cpu' else describe_device(device)}")
    print(f"device    auto -> {device}, {dtype_name(device)}")
    from engine.core.geometry import WorkSize
    from engine.pipelines.memory import NOT_COUNTED, summary_lines

    canvas = WorkSize.parse(size).canvas
    print(f"memory    estimated peak of the official models at {size} (canvas {canvas[0]}x{canvas[1]}), per stage in GiB")
    for line in summary_lines(size):
        print(f"   {line}")
    print("   line-art styles (sketch, sketch-shading: the PixArt-alpha family and the line extractor; T5 is never "
          "resident, its prompt embeddings are cached)")
    for line in summary_lines(size, input_style="sketch"):
        print(f"   {line}")
    print(f"   {NOT_COUNTED}")


def print_line_art_list() -> None:
    """The optional line-art files: present or their download size, the component, what each style lacks."""
    from engine.io.storage import human_bytes
    from engine.models.line_art import DOWNLOAD_COMMAND
    from engine.models.overview import line_art_status

    status = line_art_status()
    rows = status.rows
    _missing, to_fetch = status.to_download()
    print(f"line art  {status.present}/{len(rows)} files present (optional: the sketch and "
          f"sketch-shading styles only), {human_bytes(to_fetch)} to download with `{DOWNLOAD_COMMAND}`; "
          f"{human_bytes(status.total_bytes)} in all")
    for row in rows:
        estimate = " (estimated size)" if row.file.size_estimated and not row.installed else ""
        print(f"   {'ok' if row.installed else '--'}  {row.size_text():>10}  {row.file.verify:<8}  "
              f"{row.file.component:<21} {row.file.repo}/{row.file.path}{estimate}")
    print(f"   T5 text encoder weights: {'not needed, the prompt embeddings are cached' if status.t5_cached else 'needed until the prompt embeddings are computed once'}")
    for style in status.missing:
        print(f"   {status.style_line(style)}")
    for line in status.pin_notes:
        print(f"   {line}")


def models_list_data(size: str) -> dict:
    """`models list --json`: the same facts as the text."""
    from engine.core.devices import resolve_auto
    from engine.models.overview import models_overview
    from engine.models.speed import probe_line
    from engine.pipelines.memory import NOT_COUNTED, summary

    overview = models_overview("official")
    files = [{"path": f"{row.file.repo}/{row.file.path}", "bytes": row.size, "installed": row.installed,
              "verified_by": row.file.verify} for row in overview.rows]
    licences = [{"name": lic.name, "component": lic.component, "repo": lic.repo, "url": lic.url}
                for lic in overview.licences]
    memory = {"size": size, "not_counted": NOT_COUNTED, "estimates": {k: v.as_dict() for k, v in summary(size)},
              "line_art_estimates": {k: v.as_dict() for k, v in summary(size, input_style="sketch")}}
    from engine.models.overview import line_art_status

    return {"files": files, "total_bytes": overview.total_bytes, "to_download_bytes": overview.to_download_bytes,
            "line_art": line_art_status().as_dict(),
            "folder": str(overview.destination), "free_bytes": overview.free_bytes, "warning": overview.warning(),
            "licences": licences, "speed": probe_line("official"), "device": resolve_auto(), "memory": memory}


def line_art_to_fetch(args) -> list:
    """`download --line-art [STYLE]`: the line-art files to fetch (all with --force; else the missing ones,
    T5 skipped once the prompt embeddings are cached), announced with their size before anything is fetched."""
    from engine.io.storage import human_bytes
    from engine.models.line_art import embeddings_cached, line_art_files, line_art_missing, official_pixart_root
    from engine.models.presets import LINE_ART_TEXT_ENCODER

    style = args.line_art
    if args.force:
        skip_t5 = embeddings_cached(official_pixart_root())
        files = [f for f in line_art_files(style) if not (skip_t5 and f.component == LINE_ART_TEXT_ENCODER)]
    else:
        files, _total = line_art_missing("official", style)
    total = sum(f.approx_bytes for f in files)
    styles = "sketch and sketch-shading" if style == "all" else style
    t5 = sum(f.approx_bytes for f in files if f.component == LINE_ART_TEXT_ENCODER)
    note = f", {human_bytes(t5)} of it the T5 text encoder" if t5 else ""
    print(f"line-art files for {styles}: {len(files)} to download, {human_bytes(total)}{note}"
          + (" (sizes estimated)" if any(f.size_estimated for f in files) else ""), flush=True)
    return files
