"""The references a chapter's pages are retrieved from: the chapter's, the series library's, and (rolling) accepted pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from engine.core.errors import ProjectFileError
from engine.io.chapter import ImageSource

if TYPE_CHECKING:
    from engine.project.series import SeriesLibrary
    from engine.project.state import ChapterProject
    from engine.rap.curation import Choices
    from engine.rap.retrieval import PageRetrieval, Pick

Level = Literal["series", "chapter", "accepted", "series-accepted"]
ACCEPTED_LEVELS = ("accepted", "series-accepted")


@dataclass(frozen=True)
class PoolEntry:
    """One image of the pool: where it is, its level, how it is shown (`label`), and for an accepted
    page of this chapter its page name (`page`), for one of an earlier chapter that chapter (`chapter`)."""

    source: ImageSource
    level: Level
    label: str
    page: str | None = None
    chapter: str | None = None


class ReferencePool:
    """The pool of one chapter run. The chapter's and the series' references and the series' accepted
    pages are fixed when it is built; this chapter's accepted pages are read from the project at each
    call, so a page accepted during a run is used by the pages retrieved after it."""

    def __init__(self, project: ChapterProject, fixed: Sequence[PoolEntry], series: SeriesLibrary | None,
                 rolling: bool, later: Sequence[PoolEntry] = ()) -> None:
        self.project, self.series, self.rolling = project, series, rolling
        self._fixed, self._later = list(fixed), list(later)  # (this chapter's accepted pages go between)
        self.warnings: list[str] = []

    @property
    def entries(self) -> list[PoolEntry]:
        """Chapter references, series references, this chapter's accepted pages (rolling), the
        accepted pages of the series' earlier chapters (rolling), in that order."""
        return [*self._fixed, *self._accepted_here(), *self._later]

    def _accepted_here(self) -> list[PoolEntry]:
        if not self.rolling:
            return []
        try:
            accepted = self.project.accepted_pages()
        except ProjectFileError as exc:  # an accepted file that leads outside the project: said, never read
            if str(exc) not in self.warnings:
                self.warnings.append(str(exc))
            return []
        return [PoolEntry(ImageSource(path), "accepted", name, page=name) for name, path in accepted]

    def for_page(self, name: str) -> list[ImageSource]:
        """What page `name` is retrieved from: the pool without the page's own accepted result."""
        return [entry.source for entry in self.entries if entry.page != name]

    def entry(self, ref: str) -> PoolEntry | None:
        return next((entry for entry in self.entries if entry.source.ref == ref), None)

    @property
    def series_choices(self) -> Choices | None:
        """The series library's pins and rejects (the widest level), None without a series."""
        return self.series.choices() if self.series is not None else None

    def accepted_labels(self, picks: Sequence[Sequence[Pick]]) -> list[str]:
        """The accepted pages among the picks' references, each once, in pool order."""
        used = {pick.candidate.ref for row in picks for pick in row}
        return [entry.label for entry in self.entries if entry.level in ACCEPTED_LEVELS and entry.source.ref in used]


def build_pool(project: ChapterProject, references: Sequence[ImageSource], series: SeriesLibrary | None,
               rolling: bool) -> ReferencePool:
    """The pool of a chapter run: `references` (the chapter's), then the series library's references
    (those not already given), and with `rolling` this chapter's accepted pages and the accepted
    pages of the chapters registered in the series before this one (project.series["chapter"])."""
    fixed = [PoolEntry(source, "chapter", source.name) for source in references]
    later: list[PoolEntry] = []
    if series is not None:
        known = {entry.source.ref for entry in fixed}
        fixed += [PoolEntry(source, "series", source.name) for source in series.reference_sources()
                  if source.ref not in known]
        if rolling:
            chapter = (project.series or {}).get("chapter")
            later = [PoolEntry(page.source, "series-accepted", f"{page.chapter}/{page.page}", chapter=page.chapter)
                     for page in series.accepted(before_chapter=chapter) if page.chapter != chapter]
    return ReferencePool(project, fixed, series, rolling, later)


def retrieval_record(retrieval: PageRetrieval, pool: ReferencePool | None) -> dict[str, Any]:
    """What a colored result was retrieved from (schema.RetrievalRecordModel): the sizes that place
    its picks on the page, the picks per query region, and the accepted pages among them."""
    def box(value) -> list[int] | None:
        return None if value is None else [int(v) for v in value]

    return {
        "work_size": [retrieval.work_size.width, retrieval.work_size.height],
        "page_size": [int(v) for v in retrieval.fit.page_size],
        "content_box": [int(v) for v in retrieval.fit.content_box],
        "picks": [[{"ref": p.candidate.ref, "patch": p.candidate.patch, "box": box(p.candidate.box)} for p in row]
                  for row in retrieval.picks],
        "accepted_used": pool.accepted_labels(retrieval.picks) if pool is not None else [],
    }
