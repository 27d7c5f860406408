"""The docs match the code: every message the tool can raise is in docs/troubleshooting.md
(image-file messages in docs/images.md), and the links between docs resolve."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "site_scons" / "scons_pyocd"
ERRORS = {"FlashError", "UserError", "user_error", "Interrupted", "NoSuchBoard", "InvalidBoardId", "BoardExists",
          "RemoteFailure", "ServerLost", "ServerBusy", "StopRequested"}
#: Where each source's messages must be documented.
SOURCES = {
    "troubleshooting.md": [PACKAGE / name for name in ("builders.py", "operations.py", "session.py",
                                                       "records.py", "options.py", "paths.py", "cli.py",
                                                       "progress.py", "command_line.py", "usb_access.py")]
                          + [PACKAGE / "sim" / "board.py"]
                          + [PACKAGE / "site_tools" / "pyocd.py", ROOT / "SConstruct", ROOT / "examples" / "blinky" / "SConscript"],
    "images.md": [PACKAGE / "images.py"],
    "farm.md": [PACKAGE / name for name in ("remote.py", "remote_probe.py", "labgrid_place.py")]
               + [PACKAGE / "sim" / "serve.py"],
}


def _text(node) -> str:
    """A message with its placeholders as '\\0' (f-strings, concatenation, %-formatting)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.sub(r"%[sdrx]|%0\dX", "\0", node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _text(node.left)
    return "\0"


def messages(path: Path):
    """(line, message) of every error raised with a literal message in ``path``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and \
                getattr(node.func, "id", getattr(node.func, "attr", None)) in ERRORS:
            text = _text(node.args[0])
            if text.strip("\0 "):
                yield node.lineno, text


def normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("`", "").replace("\\|", "|")).strip()


def fragments(message: str):
    """The message's fixed pieces long enough to identify it."""
    pieces = [normal(p) for p in message.split("\0")]
    return [p for p in pieces if len(p) >= 12] or [max(pieces, key=len)]


CASES = [(doc, source, line, message) for doc, sources in SOURCES.items() for source in sources
         for line, message in messages(source)]


def test_the_scan_finds_the_messages():
    assert len(CASES) > 60
    assert any("is not a" in m and "Nothing was written" in m for _, _, _, m in CASES)


@pytest.mark.parametrize("doc,source,line,message", CASES,
                         ids=[f"{c[1].name}:{c[2]}" for c in CASES])
def test_every_message_is_documented(doc, source, line, message):
    text = normal((ROOT / "docs" / doc).read_text())
    missing = [piece for piece in fragments(message) if piece not in text]
    assert not missing, (f"{source.relative_to(ROOT)}:{line}: message not in docs/{doc}: "
                         f"{message!r}; missing: {missing}")


LINK = re.compile(r"\]\(([^)#:]+\.md)(#[^)]*)?\)")


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")) + ["../README.md"])
def test_links_between_docs_resolve(page):
    path = (ROOT / "docs" / page).resolve()
    for target, _ in LINK.findall(path.read_text()):
        assert (path.parent / target).exists(), f"{page} links to {target}, which does not exist"
