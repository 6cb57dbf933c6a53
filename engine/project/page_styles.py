"""A page's input style: its own (set by the user), else the chapter's, else (auto) the style suggested for it."""

from __future__ import annotations

from engine.core.options import AUTO_STYLE, InputStyle, StyleChoice


def page_style(own: str | None, chapter: str, suggested: dict | None = None) -> InputStyle | None:
    """The style a page is prepared and colored with: `own` (the page's, from the project) over
    `chapter` (the run's choice); under "auto", the style suggested for the page, None while
    there is no suggestion yet (the run makes one)."""
    if own is not None:
        return InputStyle(own)
    if StyleChoice(chapter) != AUTO_STYLE:
        return InputStyle(chapter)
    return InputStyle(suggested["style"]) if suggested else None


def check_page_style(style: str | None) -> str | None:
    """A page's own style as stored: one of the four styles, or None (the chapter's). ValueError otherwise
    ("auto" is a chapter's choice: a page takes a suggestion by its style)."""
    if style is None:
        return None
    try:
        return str(InputStyle(style))
    except ValueError:
        raise ValueError(f"a page's input style must be one of {', '.join(InputStyle)} or none, got {style!r}") from None
