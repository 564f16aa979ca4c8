"""HTML: self-contained report pages (images embedded, readable offline) from templates.

All HTML comes from Jinja2 templates with autoescape on: a value (a file name, a label,
an error message) is always escaped, and only :class:`markupsafe.Markup` made by
:func:`fragment`, :func:`image_tag` or :func:`table_html` goes in as markup.  Building
HTML from f-strings is how stored XSS gets in; do not.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup


@lru_cache(maxsize=None)
def environment(package: str = "dancegenre.present") -> Any:
    """The Jinja2 environment of ``package``'s ``templates/`` folder (reports here; the
    web page in ``dancegenre.web``): autoescape always on."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader(package, "templates"), autoescape=True,
                       undefined=StrictUndefined, keep_trailing_newline=True)


def stylesheet(package: str = "dancegenre.present", name: str = "style.css") -> Markup:
    """A stylesheet of ``package``'s templates, to inline in a page (pages travel as one
    file).  ``present``'s is the base every page uses; the web page adds its own."""
    env = environment(package)
    return Markup(env.loader.get_source(env, name)[0])


def fragment(template: str, **values: Any) -> Markup:
    """A piece of HTML from an inline template; every ``{{ value }}`` is escaped.

    >>> fragment("<p>{{ name }}</p>", name="<script>")
    Markup('<p>&lt;script&gt;</p>')
    """
    return Markup(environment().from_string(template).render(**values))


def render(name: str, *, package: str = "dancegenre.present", **values: Any) -> str:
    """The template ``name`` of ``package``'s ``templates/``, values escaped."""
    return environment(package).get_template(name).render(**values)


def image_tag(path: str | Path, alt: str) -> Markup:
    """An <img> with the PNG embedded as base64, so the page needs no other file."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return fragment('<img alt="{{ alt }}" src="data:image/png;base64,{{ data }}">', alt=alt, data=data)


def table_html(frame: pd.DataFrame, *, floats: str = "{:.3f}") -> Markup:
    """``frame`` as an HTML table; pandas escapes every cell and header.  A table wider
    than the page (an EDA of seven genres: a mean column each) scrolls on its own; its
    cells never break a number or a test's name over two lines."""
    table = frame.to_html(index=False, escape=True, float_format=lambda v: floats.format(v), border=0)
    return Markup('<div class="wide">') + Markup(table) + Markup("</div>")


def page(title: str, sections: list[tuple[str, Markup | str]]) -> str:
    """A whole report page: ``sections`` are (heading, content); content that is not
    Markup is shown as text."""
    return render("report.html", title=title, css=stylesheet(), sections=sections)


