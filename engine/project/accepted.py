"""Accepted pages: a colored result the colorist marked good, which then serves as a rolling reference."""

from __future__ import annotations

from pathlib import Path

from engine.core.errors import InputError
from engine.project.variations import find


class PageAcceptance:
    """ChapterProject's accept methods (mixed in; they use its lock, pages and path checks)."""

    def accept(self, name: str) -> int:
        """Accept a done page's picked result (returns its variation id): later runs keep it as it is and,
        with rolling references, other pages may retrieve from it. InputError when it has no result."""
        with self.lock:
            page = self.page(name)
            picked = page.picked_variation()
            if page.status != "done" or picked is None:
                raise InputError(f"page {name}: only a colored page can be accepted (it is {page.status})")
            page.accepted = picked.id
            return picked.id

    def unaccept(self, name: str) -> None:
        with self.lock:
            self.page(name).accepted = None

    def accepted_variation(self, name: str):
        """The page's accepted variation, or None."""
        with self.lock:
            page = self.page(name)
            return find(page.variations, page.accepted)

    def accepted_pages(self) -> list[tuple[str, Path]]:
        """(page name, its accepted result's file: absolute, checked inside the project folder), in page order."""
        with self.lock:
            found = [(page, find(page.variations, page.accepted)) for page in self.pages if page.accepted is not None]
        return [(page.name, self.variation_path(page, variation)) for page, variation in found if variation is not None]
