"""``write_text_atomically``: the file is the old one or the new one, never a half, and an
interrupted write (a full disk, Ctrl-C) leaves no temporary file beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from nb2prod.builddir import write_text_atomically


def test_the_text_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "card.json"
    write_text_atomically(target, "one\n")
    write_text_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["card.json"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    target = tmp_path / "workflow.yml"
    target.write_text("the user's\n")

    def interrupted(self: Path, other: Path) -> Path:
        raise error("interrupted")

    monkeypatch.setattr(Path, "replace", interrupted)
    with pytest.raises(error):
        write_text_atomically(target, "new\n")
    monkeypatch.undo()
    assert target.read_text() == "the user's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workflow.yml"]
