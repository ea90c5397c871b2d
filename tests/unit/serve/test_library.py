"""The --models catalog: store models and finished runs by name, read through the store and `rundir`."""

from __future__ import annotations

import json

import pytest

from tunelab.errors import TunelabError
from tunelab.rundir import Run
from tunelab.serve.library import catalog, check_wanted
from tunelab.store.index import Store
from tunelab.store.pull import pull


def _run(root, name, state, base, kind="adapter"):
    run = Run(root / name)
    part = run.path / kind
    part.mkdir(parents=True)
    (part / ("adapter_config.json" if kind == "adapter" else "config.json")).write_text(json.dumps({}))
    run.update_status(state=state, base_model=str(base), pid=2**22 + 7, pid_start=1.0)
    return run


@pytest.fixture
def library(tiny_models, tmp_path):
    store = Store(tmp_path / "home")
    base = pull(str(tiny_models["llama"]), name="a", store=store).path
    runs = tmp_path / "runs"
    _run(runs, "tuned", "finished", base)
    _run(runs, "training", "running", base)  # its pid is gone: crashed, not served
    _run(runs, "failed", "failed", base)
    _run(runs, "orphan", "finished", tmp_path / "deleted-base")
    _run(runs, "full", "finished", base, kind="model")
    return store, runs


def test_catalog_lists_store_models_and_finished_runs(library):
    store, runs = library
    items = catalog(["all"], runs, store)
    assert set(items) == {"a", "tuned", "full"}
    assert items["tuned"].base_name == "a" and items["tuned"].key == items["a"].key  # one base in memory
    assert items["tuned"].adapter == runs / "tuned" / "adapter"
    assert items["full"].adapter is None and items["full"].base_path == runs / "full" / "model"
    assert items["a"].size > 0 and items["a"].family
    assert set(catalog(["tuned"], runs, store)) == {"tuned"}


def test_a_name_in_models_must_exist(library, monkeypatch):
    store, runs = library
    monkeypatch.setenv("TUNELAB_HOME", str(store.home))
    check_wanted(["a", "tuned"], runs)
    with pytest.raises(TunelabError, match="no store model or finished run named 'tunde'. Did you mean: tuned"):
        check_wanted(["tunde"], runs)


def test_reward_model_runs_are_not_served_and_say_why(library, monkeypatch):
    from tunelab.errors import RewardModelError
    from tunelab.serve.config import ServeConfig
    from tunelab.serve.errors import APIError
    from tunelab.serve.models_manager import ModelManager

    store, runs = library
    monkeypatch.setenv("TUNELAB_HOME", str(store.home))
    scorer = _run(runs, "scorer", "finished", store.get("a").path, kind="model")
    scorer.write_config({"stage": "rm"})
    assert "scorer" not in catalog(["all"], runs, store) and "full" in catalog(["all"], runs, store)
    with pytest.raises(RewardModelError, match="run 'scorer' is a reward model .* cannot be served"):
        check_wanted(["scorer"], runs)
    manager = ModelManager(ServeConfig(models=["all"], runs_dir=str(runs)))
    with pytest.raises(APIError, match="reward model") as err:
        manager.find("scorer")
    assert err.value.status == 400 and err.value.param == "model"
