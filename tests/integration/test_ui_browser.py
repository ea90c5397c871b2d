"""The web UI in headless chromium (Playwright) against the real server on a tiny model.

Covers: the API-key prompt, every page loading (with a screenshot each into
test-output/), a streamed chat reply with history kept across a reload, regenerate,
compare mode, the Markdown renderer, bad form input that starts nothing, and a tiny
training run started from the form whose loss chart gains points while it trains.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from helpers.run_factory import make_run
from serve_util import API_KEY, make_lora_adapter, start_server

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui_runs")


@pytest.fixture(scope="module")
def server(tiny_models, runs_dir, tmp_path_factory):
    adapter = make_lora_adapter(tiny_models["llama"], tmp_path_factory.mktemp("ui_adapter") / "a")
    srv = start_server(tiny_models["llama"], api_key=API_KEY, served_name="tiny", ui=True,
                       runs_dir=str(runs_dir), adapters={"tuned": str(adapter)})
    # jobs (the form's training run) get one OpenMP thread, as the CLI tests do: on a loaded 2-core
    # machine two spinning threads made each tiny step ~18x slower (1.8 s vs 0.1 s measured)
    srv.server.config.app.state.ui.jobs.env = {**os.environ, "OMP_NUM_THREADS": "1"}
    yield srv
    ctx = srv.server.config.app.state.ui
    ctx.jobs.shutdown(timeout_s=10)
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: install Debian's chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    """A fresh page that already holds the API key (the key prompt has its own test)."""
    context = browser.new_context(viewport={"width": 1300, "height": 860})
    context.add_init_script(f"localStorage.setItem('tunelab.apiKey', {json.dumps(API_KEY)})")
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _api(server, path: str, **kw):
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10, **kw).json()


def test_key_is_asked_once_then_models_load(browser, server, output_dir):
    context = browser.new_context()
    pg = context.new_page()
    pg.goto(server.url + "/ui/#/chat")
    dialog = pg.locator("#key-dialog")
    dialog.wait_for(state="visible")
    pg.fill("#key-input", API_KEY)
    pg.click("#key-dialog button")
    pg.wait_for_function("document.querySelectorAll('#model-a option').length === 2")
    assert pg.locator("#model-a option").all_inner_texts() == ["tiny  (base)", "tuned  (adapter of tiny)"]
    assert pg.evaluate("localStorage.getItem('tunelab.apiKey')") == API_KEY
    context.close()


@pytest.mark.parametrize("route, ready", [
    ("chat", "#chat-input"), ("train", "#train-form"), ("runs", "#page-runs .panel"),
    ("models", "#pull-form"), ("status", "#stat-running"),
])
def test_each_page_loads(page, server, output_dir, route, ready):
    page.goto(f"{server.url}/ui/#/{route}")
    page.wait_for_selector(ready, state="visible")
    assert page.locator(f"#nav a[data-page={route}]").get_attribute("class") == "active"
    page.screenshot(path=str(output_dir / f"ui-{route}.png"), full_page=True)


def test_markdown_renderer_in_the_browser(page, server):
    page.goto(server.url + "/ui/")
    html = page.evaluate("""async () => (await import('/ui/js/markdown.js')).render(
        '# Title\\n\\nSome **bold** and `code` <b>raw</b>\\n\\n- one\\n- two\\n\\n```python\\nprint(1 < 2)\\n```')""")
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "&lt;b&gt;raw&lt;/b&gt;" in html and "<b>" not in html  # model output never becomes markup
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert '<code class="lang-python">print(1 &lt; 2)</code>' in html
    streaming = page.evaluate("async () => (await import('/ui/js/markdown.js')).render('```\\nhalf')")
    assert "<pre" in streaming and "half" in streaming  # an unclosed fence renders while streaming


def _count_updates(page, selector: str) -> None:
    page.evaluate("""sel => { window.__updates = 0;
        new MutationObserver(() => { window.__updates += 1; })
          .observe(document.querySelector(sel), {subtree: true, childList: true, characterData: true}); }""",
                  selector)


def test_chat_streams_a_reply_keeps_history_and_regenerates(page, server, output_dir):
    page.goto(server.url + "/ui/#/chat")
    page.wait_for_function("document.querySelectorAll('#model-a option').length === 2")
    page.fill("input[name=max_tokens]", "24")
    page.fill("input[name=temperature]", "1")  # greedy on a random tiny model emits only newlines
    page.fill("input[name=seed]", "7")
    _count_updates(page, "#messages-a")
    page.fill("#chat-input", "Hello, who are you?")
    page.click("#send")
    page.wait_for_selector("#messages-a .msg.assistant .regenerate", timeout=60_000)
    reply = page.locator("#messages-a .msg.assistant .body").inner_text()
    assert reply.strip() and "Error" not in reply
    assert page.evaluate("window.__updates") >= 3  # user turn, empty reply, then streamed deltas
    assert "tok/s" in page.locator("#messages-a .stats").inner_text()
    page.reload()
    page.wait_for_selector("#messages-a .msg.user")
    assert page.locator("#messages-a .msg.user .body").inner_text() == "Hello, who are you?"
    page.click("#messages-a .regenerate")
    page.wait_for_selector("#messages-a .msg.assistant .regenerate", timeout=60_000)
    assert page.locator("#messages-a .msg.assistant").count() == 1
    assert page.locator("#messages-a .msg.assistant .body").inner_text() == reply  # same seed: same again
    page.screenshot(path=str(output_dir / "ui-chat-reply.png"), full_page=True)


def test_compare_sends_one_prompt_to_two_models(page, server, output_dir):
    page.goto(server.url + "/ui/#/chat")
    page.wait_for_function("document.querySelectorAll('#model-b option').length === 2")
    page.click("text=+ New chat")
    page.check("#compare-toggle")
    page.select_option("#model-a", "tiny")
    page.select_option("#model-b", "tuned")
    page.fill("input[name=max_tokens]", "16")
    page.fill("input[name=temperature]", "1")
    page.fill("input[name=seed]", "7")
    page.fill("#chat-input", "Say something")
    page.click("#send")
    for pane in ("a", "b"):
        page.wait_for_selector(f"#messages-{pane} .msg.assistant .regenerate", timeout=60_000)
    a = page.locator("#messages-a .msg.assistant .body").inner_text()
    b = page.locator("#messages-b .msg.assistant .body").inner_text()
    assert a.strip() and b.strip() and a != b  # same seed, so only the adapter makes them differ
    page.screenshot(path=str(output_dir / "ui-chat-compare.png"), full_page=True)


def test_serving_status_shows_traffic(page, server, output_dir):
    page.goto(server.url + "/ui/#/status")
    page.wait_for_selector("#served-models td")
    assert "adapter" in page.locator("#served-models").inner_text()
    page.wait_for_function("document.querySelector('#metrics-raw').textContent.includes('tunelab_generation_tokens_total')")
    generated = page.locator("#status-cards .card", has_text="tokens generated").locator(".value").inner_text()
    assert float(generated) > 0  # the chat tests above generated tokens
    page.screenshot(path=str(output_dir / "ui-status-traffic.png"), full_page=True)


def _write_dataset(path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"what is {i} plus one?"},
                          {"role": "assistant", "content": f"{i} plus one is {i + 1}."}]} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("fill, field, words", [
    ({}, "datasets", "upload a file or give a path"),
    ({"datasets": "DATA", "lr": "fast"}, "lr", 'got "fast"'),
    ({"datasets": "DATA", "lora.rank": "2.5"}, "lora.rank", "whole number"),
    ({"datasets": "DATA", "epochs": "0"}, "epochs", "epochs must be >= 1"),  # only the server knows
    ({"datasets": "/no/such.jsonl"}, "datasets", "not found"),
])
def test_bad_train_input_shows_inline_error_and_starts_nothing(page, server, runs_dir, tmp_path, fill, field, words):
    data = _write_dataset(tmp_path / "d.jsonl")
    page.goto(server.url + "/ui/#/train")
    page.fill("input[name=name]", "never-started")
    for name, value in fill.items():
        page.fill(f"[name='{name}']", str(data) if value == "DATA" else value)
    page.click("#start-button")
    error = page.locator(f"[data-error-for='{field}']")
    error.wait_for(state="visible")
    assert words in error.inner_text()
    assert "invalid" in page.locator(f"[name='{field}']").get_attribute("class")
    assert page.url.endswith("#/train")
    assert [j for j in _api(server, "/ui/api/jobs")["jobs"] if j["kind"] == "train"] == []
    assert not (runs_dir / "never-started").exists()


def test_training_run_from_the_form_charts_live(page, server, runs_dir, tiny_models, tmp_path, output_dir):
    data = _write_dataset(tmp_path / "identity.jsonl")
    page.goto(server.url + "/ui/#/train")
    page.fill("input[name=name]", "ui-run")
    page.fill("input[name=model]", str(tiny_models["llama"]))
    page.set_input_files("#dataset-file", str(data))  # goes through the chunked upload
    # Enough steps that a quiet machine still trains across several 1 s UI polls (~6 ms a step).
    for name, value in {"max_steps": "600", "lora.rank": "4", "micro_batch_size": "2",
                        "data.cutoff_len": "64", "lr": "1e-3", "lora.dropout": "0.05",
                        "lora.target_modules": "q_proj, v_proj"}.items():
        page.fill(f"[name='{name}']", value)
    page.select_option("select[name='data.template']", "llama3")  # its options come from the server
    page.click("#check-button")
    page.wait_for_function("document.querySelector('#data-report').textContent.includes('rows: 24 valid')",
                           timeout=90_000)
    assert "tunelab train" in page.locator("#train-cli").inner_text()
    assert "max_steps: 600" in page.locator("#train-yaml").inner_text()
    cli = page.locator("#train-cli").inner_text()
    for arg in ("lora.dropout=0.05", "lora.target_modules=q_proj,v_proj", "data.template=llama3"):
        assert arg in cli
    page.screenshot(path=str(output_dir / "ui-train-check.png"), full_page=True)
    page.click("#start-button")
    page.wait_for_url("**/#/runs/ui-run")
    seen = _watch_chart(page, timeout_s=150)
    assert len([n for n in seen if n > 0]) >= 2 and seen[-1] > min(n for n in seen if n > 0), seen
    page.wait_for_selector("#page-run .badge.state-finished", timeout=60_000)
    # 600 train-loss points and the final eval_loss (the default eval_split holds one example out)
    assert page.locator("#chart-loss svg").get_attribute("data-points") == "601"
    assert page.locator("#run-log").inner_text().strip()
    page.screenshot(path=str(output_dir / "ui-run.png"), full_page=True)
    assert (runs_dir / "ui-run" / "adapter" / "adapter_config.json").exists()
    listed = {r["name"]: r["state"] for r in _api(server, "/ui/api/runs")["runs"]}
    assert listed["ui-run"] == "finished"


def _watch_chart(page, timeout_s: float) -> list[int]:
    """The loss chart's point count, sampled until the run leaves 'running'/'starting'."""
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        points = page.evaluate("document.querySelector('#chart-loss svg')?.dataset.points")
        if points is not None and (not seen or int(points) != seen[-1]):
            seen.append(int(points))
        if page.locator("#page-run .badge.state-finished, #page-run .badge.state-failed").count():
            break
        time.sleep(0.2)
    return seen


@pytest.fixture()
def finished_run(runs_dir, tiny_models) -> str:
    """A finished run in the UI's runs folder: the one the form trained, else one built here."""
    if (runs_dir / "ui-run" / "adapter").is_dir():
        return "ui-run"
    if not (runs_dir / "built-run").is_dir():
        make_run(tiny_models["llama"], runs_dir / "built-run")
    return "built-run"


def test_report_and_export_of_the_ui_run(page, server, finished_run, output_dir):
    page.goto(server.url + f"/ui/#/runs/{finished_run}")
    page.click("#write-report", timeout=30_000)
    link = page.locator("a", has_text="Open final report")
    link.wait_for(timeout=60_000)
    report = httpx.get(server.url + link.get_attribute("href"), timeout=10)
    assert report.status_code == 200 and "<html" in report.text.lower()

    page.goto(server.url + "/ui/#/models")
    page.fill("#export-form input[name=source]", finished_run)
    page.select_option("#export-form select[name=quant]", "f16")
    page.click("#export-form button[type=submit]")
    download = page.locator("#jobs a.button", has_text=".gguf")
    download.wait_for(timeout=150_000)
    page.screenshot(path=str(output_dir / "ui-models-export.png"), full_page=True)
    res = httpx.get(server.url + download.get_attribute("href"), timeout=30)
    assert res.status_code == 200 and res.content[:4] == b"GGUF"
    no_key = httpx.get(server.url + download.get_attribute("href").split("?")[0], timeout=10)
    assert no_key.status_code == 401


def test_preference_run_page_charts_rewards_margin_and_accuracy(page, server, runs_dir, tiny_models, output_dir):
    from helpers.run_factory import write_metrics, write_status

    run = runs_dir / "dpo-run"
    write_status(run, tiny_models["llama"])
    rows = [{"step": s, "loss": 0.69 - 0.05 * s, "lr": 1e-4, "tokens_per_s": 500.0, "rewards/chosen": 0.02 * s,
             "rewards/rejected": -0.01 * s, "margin": 0.03 * s, "accuracy": min(1.0, 0.1 * s)} for s in range(1, 11)]
    for row in rows[4::5]:
        row.update(eval_loss=row["loss"], eval_margin=row["margin"], eval_accuracy=row["accuracy"])
    write_metrics(run, rows)
    page.goto(server.url + "/ui/#/runs/dpo-run")
    page.wait_for_selector("#chart-rewards svg[data-points='20']", timeout=30_000)
    points = {key: page.locator(f"#chart-{key} svg").get_attribute("data-points") for key in ("margin", "accuracy")}
    assert points == {"margin": "12", "accuracy": "12"}  # 10 train points + 2 eval points each
    assert page.locator("#chart-rewards svg polyline[data-name='rejected']").count() == 1
    assert page.locator("#chart-kl").is_hidden()  # only KTO logs kl
    page.screenshot(path=str(output_dir / "ui-run-preference.png"), full_page=True)
    write_status(runs_dir / "sft-run", tiny_models["llama"])
    write_metrics(runs_dir / "sft-run", [{"step": 1, "loss": 1.0, "lr": 1e-4}])
    page.goto(server.url + "/ui/#/runs/sft-run")
    page.wait_for_selector("#chart-loss svg[data-points='1']", timeout=30_000)
    assert page.locator("#chart-rewards").is_hidden() and page.locator("#chart-accuracy").is_hidden()
    (runs_dir / "sft-run" / "config.yaml").write_text("stage: rm\n")  # the same run, now a reward model
    page.goto(server.url + "/ui/#/runs/sft-run")
    note = page.locator("#run-reward-model")
    note.wait_for(timeout=30_000)
    assert "tunelab merge" in note.inner_text() and "Serve it" not in page.locator("#run-final").inner_text()


def test_run_page_links_to_its_tensorboard_logs(page, server, runs_dir, tiny_models, output_dir):
    import io
    import zipfile

    pytest.importorskip("tensorboard")
    from helpers.run_factory import write_metrics, write_status

    from tunelab.train.trackers import TensorBoard

    run = runs_dir / "tb-run"
    write_status(run, tiny_models["llama"])
    rows = [{"step": s, "loss": 2.0 / s, "lr": 1e-4} for s in range(1, 4)]
    write_metrics(run, rows)
    writer = TensorBoard(run, {"method": "lora"})  # the event files report_to: tensorboard writes
    for row in rows:
        writer.log(row)
    writer.finish(None)
    page.goto(server.url + "/ui/#/runs/tb-run")
    link = page.locator("#run-tensorboard a#tensorboard-link")
    link.wait_for(timeout=30_000)
    page.screenshot(path=str(output_dir / "ui-run-tensorboard.png"))
    assert f"tensorboard --logdir {(run / 'tensorboard').resolve()}" in page.locator("#run-tensorboard").inner_text()
    res = httpx.get(server.url + link.get_attribute("href"), timeout=10)  # the link carries the key
    assert res.status_code == 200 and link.get_attribute("download") == "tb-run-tensorboard.zip"
    names = zipfile.ZipFile(io.BytesIO(res.content)).namelist()
    assert len(names) == 1 and names[0].startswith("tb-run/events.out.tfevents.")
