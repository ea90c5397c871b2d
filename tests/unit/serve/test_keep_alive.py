"""keep_alive as Ollama reads it, and the serve keys that bound `--models`."""

from __future__ import annotations

import pytest

from tunelab.config import build
from tunelab.errors import ConfigError, InvalidRequest
from tunelab.serve.config import ServeConfig
from tunelab.serve.keep_alive import parse_keep_alive


@pytest.mark.parametrize("value, seconds", [("5m", 300.0), ("1h30m", 5400.0), ("500ms", 0.5), ("1.5s", 1.5),
                                            ("300", 300.0), (2.5, 2.5), (0, 0.0), ("0", 0.0),
                                            (-1, None), ("-1m", None), ("-1", None)])
def test_durations(value, seconds):
    assert parse_keep_alive(value, "keep_alive") == seconds


@pytest.mark.parametrize("value", ["5 min", "m", "", "5x", True, "1h-3m"])
def test_bad_values_name_the_field(value):
    with pytest.raises(InvalidRequest) as err:
        parse_keep_alive(value, "keep_alive")
    assert err.value.param == "keep_alive" and "keep_alive" in str(err.value)


def test_serve_config_checks_the_library_keys():
    cfg = build(ServeConfig, {"models": "a,b", "keep_alive": "-1", "max_loaded_bytes": 10})
    assert cfg.models == ["a", "b"] and cfg.max_loaded_models == 3
    for bad, word in [({"keep_alive": "soon"}, "keep_alive"), ({"max_loaded_models": 0}, "max_loaded_models"),
                      ({"max_loaded_bytes": -1}, "max_loaded_bytes"),
                      ({"models": ["all"], "model": "x"}, "drop model"),
                      ({"models": ["all"], "watch": "runs"}, "drop watch")]:
        with pytest.raises(ConfigError, match=word):
            build(ServeConfig, bad)
