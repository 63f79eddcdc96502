"""The README's configuration reference is the one generated from the config dataclasses."""

from __future__ import annotations

from pathlib import Path

from aiorl.config_reference import BEGIN, END, SECTIONS, field_docs, replace_block

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_configuration_reference_is_up_to_date():
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert replace_block(text) == text, "run `python -m aiorl.config_reference README.md`"


def test_every_config_field_has_a_docstring():
    for _, cls in SECTIONS:
        undocumented = [name for name, (_, doc) in field_docs(cls).items() if not doc]
        assert undocumented == [], f"{cls.__name__}: {undocumented}"
