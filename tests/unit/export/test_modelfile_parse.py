"""Reading a Modelfile back (for the server's /api/create): what export writes parses to the same parts."""

from __future__ import annotations

import pytest

from tunelab.data.templates import ChatTemplate
from tunelab.errors import InvalidRequest
from tunelab.export.modelfile import ollama_template, options_of, parse_modelfile, render_modelfile


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


def test_sampling_parameters_are_typed_checked_and_round_trip():
    recipe = parse_modelfile("FROM a\nPARAMETER temperature 0.7\nPARAMETER num_predict 5\nPARAMETER seed 42\n"
                             "PARAMETER top_k 20\nPARAMETER repeat_penalty 1.1\nPARAMETER stop x\n")
    options = options_of(recipe)
    assert options == {"temperature": 0.7, "num_predict": 5, "seed": 42, "top_k": 20, "repeat_penalty": 1.1}
    template = ChatTemplate.builtin("chatml", eos_token="<|endoftext|>")
    template.options = options
    back = parse_modelfile(render_modelfile("m.gguf", template))  # export writes what create reads
    assert options_of(back) == options and back.parameters["stop"] == ["<|im_end|>", "<|endoftext|>"]


@pytest.mark.parametrize("line, message", [
    ("PARAMETER mirostat 2", "PARAMETER mirostat is not supported: tunelab honours temperature"),
    ("PARAMETER num_ctx 4096", "PARAMETER num_ctx is not supported"),
    ("PARAMETER top_p 7", "PARAMETER top_p 7.*less than or equal to 1"),
    ("PARAMETER temperature warm", "PARAMETER temperature 'warm'"),
    ("PARAMETER seed 1\nPARAMETER seed 2", "PARAMETER seed is given 2 times"),
])
def test_parameters_we_cannot_honour_are_named(line, message):
    with pytest.raises(InvalidRequest, match=message):
        options_of(parse_modelfile(f"FROM a\n{line}\n"))
