"""Reading a Modelfile back (for the server's /api/create): what export writes parses to the same parts."""

from __future__ import annotations

import pytest

from tunelab.data.templates import ChatTemplate
from tunelab.errors import InvalidRequest
from tunelab.export.modelfile import ollama_template, parse_modelfile, render_modelfile


def test_round_trip_of_an_exported_modelfile():
    template = ChatTemplate.builtin("chatml", eos_token="<|endoftext|>")
    recipe = parse_modelfile(render_modelfile("m.gguf", template, 'Be kind.\nSay "hi".'))
    assert recipe.from_ == "./m.gguf" and recipe.adapter is None
    assert recipe.template == ollama_template(template) and "<|im_start|>" in recipe.template
    assert recipe.system == 'Be kind.\nSay "hi".'
    assert recipe.parameters == {"stop": ["<|im_end|>", "<|endoftext|>"]}


def test_instructions_are_case_blind_and_repeat():
    recipe = parse_modelfile('# a comment\nfrom base\nadapter ./run\nPARAMETER stop "a \\"b\\""\n'
                             'PARAMETER stop c\nsystem """one\ntwo"""\n')
    assert (recipe.from_, recipe.adapter, recipe.system) == ("base", "./run", "one\ntwo")
    assert recipe.parameters == {"stop": ['a "b"', "c"]}


@pytest.mark.parametrize("text, message", [
    ("FROM a\nLICENSE MIT\n", "line 2: LICENSE is not supported"),
    ("FROM a\nMESSAGE user hi\n", "line 2: MESSAGE is not supported"),
    ("SYSTEM hi\n", "no FROM line"),
    ('FROM a\nSYSTEM """open\n', '""" is never closed'),
    ("FROM a\nPARAMETER stop\n", "PARAMETER stop needs a value"),
    ("FROM\n", "FROM needs a value"),
])
def test_bad_modelfiles_name_the_line(text, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_modelfile(text)
