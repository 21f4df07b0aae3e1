"""The documents a user reads: the README short, with its picture, and every relative
link in it and in docs/ leading to a file that exists."""

import re
import struct

import pytest
from helpers import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             ROOT / "benchmarks" / "RESULTS.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _links(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # not inside code
    return LINK.findall(text)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(document):
    for target in _links(document):
        if re.match(r"[a-z]+:", target):  # http:, mailto:: not checked offline
            continue
        path, _, anchor = target.partition("#")
        assert (document.parent / path).exists(), f"{document.name}: {target}"


def test_the_readme_is_short_and_leads_with_its_picture():
    text = (ROOT / "README.md").read_text()
    words = len(re.sub(r"```.*?```", "", text, flags=re.S).split())
    assert words <= 1200, words
    first_image = re.search(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert first_image and text.index(first_image.group(0)) < text.index("\n## ")
    picture = (ROOT / first_image.group(1)).read_bytes()
    assert picture[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", picture[16:24])
    assert width >= 800 and height >= 500  # a screenshot of the page, not an icon
    assert len(_links(ROOT / "README.md")) >= 8
