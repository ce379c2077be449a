"""The README's links into the repository and the docs site.

`make docs` (mkdocs build --strict, run by `make test`) checks every link inside docs/; the README is not part
of the site, so its links are checked here: each names a file that exists, and each page of docs/ it links is
one the site's nav shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _nav_pages(nav: list) -> set[str]:
    pages: set[str] = set()
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            pages |= _nav_pages(value) if isinstance(value, list) else {value}
    return pages


def _readme_links() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # links inside code blocks are not links
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", prose) if not re.match(r"[a-z]+:|#", m)]


def test_readme_links_name_files_that_exist():
    links = _readme_links()
    assert links, "the README links into docs/"
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_readme_links_only_docs_pages_the_site_shows():
    # mkdocs.yml is MkDocs' config; only its nav is read here.
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    pages = [link.split("#")[0] for link in _readme_links() if link.startswith("docs/") and ".md" in link]
    assert pages
    hidden = [page for page in pages if page.removeprefix("docs/") not in nav]
    assert not hidden, f"README.md links to docs pages outside mkdocs.yml's nav: {hidden}"
