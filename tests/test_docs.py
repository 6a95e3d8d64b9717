"""The documentation's code examples run, so what the docs show stays true.

Every fenced ```python block of ``docs/**/*.md`` and of the README runs, page by page: a page's
blocks in order, in one fresh namespace, in an empty temporary folder (files an example writes
land there). A block that cannot run here (it needs a display, a GPU, a file only the user has,
or a long run) is preceded by ``<!-- no-test: why -->``, reason required; those stay few.

The README's first two commands are the demo and the test command that CI runs (.ci/run reads
the one between the ``<!-- tests -->`` markers); the test command builds the docs strictly.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NO_TEST = re.compile(r"<!--\s*no-test:\s*(?P<why>[^>]*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
MAX_NO_TEST = 12


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    no_test: str | None  # the reason, when the block opts out


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the opt-out marker just above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group("lang"):
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NO_TEST.search(prev)
        found.append(Block(page, start + 1, m.group("lang"), "\n".join(body) + "\n",
                           marker.group("why") if marker else None))
    return found


PAGES = sorted(DOCS.rglob("*.md"))
# the README's example runs too: it is the first code a visitor copies
RUN_PAGES = [p for p in [*PAGES, ROOT / "README.md"]
             if any(b.lang == "python" and b.no_test is None for b in blocks(p))]


def test_docs_have_examples_to_run():
    # a renamed folder or a changed fence style must not make this file test nothing
    assert len(RUN_PAGES) >= 10, [p.relative_to(ROOT).as_posix() for p in RUN_PAGES]
    assert ROOT / "README.md" in RUN_PAGES


def test_opt_outs_are_few_and_say_why():
    skipped = [b for p in PAGES for b in blocks(p) if b.no_test is not None]
    for b in skipped:
        assert b.no_test, f"{b.page.relative_to(ROOT)}:{b.line}: <!-- no-test: --> needs a reason"
        assert b.lang == "python", f"{b.page.relative_to(ROOT)}:{b.line}: only python blocks run"
    assert len(skipped) <= MAX_NO_TEST, [f"{b.page.name}:{b.line}" for b in skipped]


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.lang != "python" or block.no_test is not None:
            continue
        where = f"{page.relative_to(ROOT).as_posix()}:{block.line}"
        # the filename makes a traceback point at the page and line of the failing example
        exec(compile("\n" * block.line + block.code, where, "exec"), namespace)


def readme_commands() -> list[str]:
    readme = ROOT / "README.md"
    return [b.code.strip() for b in blocks(readme) if b.lang == "bash"]


def test_readme_starts_with_the_demo_and_the_test_command():
    demo, tests = readme_commands()[:2]
    assert "napari-xaimed demo --headless" in demo
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marked = text.split("<!-- tests -->", 1)[1].split("<!-- /tests -->", 1)[0]
    assert tests in marked
    assert "\n```bash" in text[:text.index("<!-- tests -->")]  # the demo command comes first
    # the docs are built strictly before the tests, so a broken page fails CI
    assert tests.endswith("python -m pytest")
    assert "mkdocs build --strict" in tests
    assert tests.index("mkdocs build --strict") < tests.rindex("python -m pytest")


def test_ci_reads_the_readme_test_command():
    # the same extraction .ci/run performs
    script = (ROOT / ".ci" / "run").read_text()
    assert "<!-- tests -->" in script
    out = subprocess.run(
        ["bash", "-c", r"sed -n '/<!-- tests -->/,/<!-- \/tests -->/p' README.md"
                       r" | grep -v -e '^<!--' -e '^```'"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == readme_commands()[1]


def test_every_docs_page_is_in_the_nav():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def walk(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    listed = set(walk(config["nav"]))
    pages = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert pages - listed == set()


def test_cli_page_lists_every_option():
    import contextlib
    import io
    from importlib.metadata import entry_points

    main = entry_points(group="console_scripts")["napari-xaimed"].load()
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    commands = ["demo", "register", "segment", "rerun", "script", "evaluate", "attribute",
                "embed"]
    assert set(sections) == set(commands)
    for command in commands:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main([command, "--help"])
        options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.getvalue()))
        assert options, command
        missing = sorted(o for o in options if o not in sections[command])
        assert not missing, f"docs/cli.md, {command}: {missing}"
