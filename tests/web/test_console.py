"""The web console: the session cookie (and its CSRF guard), the static files and their messages, and
end-to-end runs in Debian's headless Chromium (Playwright) against a real `tuneforge server`.

Each browser step saves a screenshot to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MEMO, write
from tests.support.paths import ARTIFACTS, FIXTURES, ROOT
from tests.support.platformhelp import make_client
from tuneforge.spec import TEMPLATES

WEB = ROOT / "src" / "tuneforge" / "web"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# -- the session cookie ---------------------------------------------------------------------------------


def test_session_cookie_signs_in_and_guards_unsafe_methods_against_csrf():
    with make_client() as api:
        admin = api.headers.pop("Authorization").removeprefix("Bearer ")
        assert api.get("/api/v1/session").status_code == 401
        assert api.post("/api/v1/session", json={"token": "tf_nope"}).status_code == 401
        scoped = None
        r = api.post("/api/v1/session", json={"token": admin})
        assert r.status_code == 201 and r.json()["scope"] == "admin"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert admin not in r.text  # the answer never echoes the secret
        # Safe methods: the cookie alone is enough (EventSource and downloads send nothing else).
        assert api.get("/api/v1/jobs").status_code == 200
        # Unsafe methods with only the cookie: what a forged cross-site form would send → refused.
        assert api.post("/api/v1/tokens", json={"name": "x"}).status_code == 401
        csrf = {"X-Requested-With": "tuneforge-console"}
        made = api.post("/api/v1/tokens", json={"name": "x", "scope": "deployment:chat"}, headers=csrf)
        assert made.status_code == 201
        scoped = made.json()["token"]
        # A deployment token cannot open the console.
        assert api.post("/api/v1/session", json={"token": scoped}).status_code == 403
        out = api.delete("/api/v1/session")
        assert out.status_code == 204 and 'tuneforge_session=""' in out.headers["set-cookie"]
        api.cookies.clear()
        assert api.get("/api/v1/jobs").status_code == 401
        # Revoking the token ends the sessions made with it.
        api.post("/api/v1/session", json={"token": admin})
        assert api.get("/api/v1/jobs").status_code == 200
        token_id = admin.split("_")[1]
        assert api.delete(f"/api/v1/tokens/{token_id}", headers=csrf).status_code == 200
        assert api.get("/api/v1/jobs").status_code == 401


def test_console_is_served_and_every_message_key_exists_in_both_languages():
    with make_client() as api:
        index = api.get("/")
        assert index.status_code == 200 and '<script type="module" src="/js/app.js">' in index.text
        assert (
            api.get("/js/pages/job.js")
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert api.get("/api/v1/nope").status_code in (401, 404)  # the API keeps its own answers
        assert api.get("/healthz").json() == {"status": "ok"}
    en = json.loads((WEB / "i18n" / "en.json").read_text())
    zh = json.loads((WEB / "i18n" / "zh.json").read_text())
    assert set(en) == set(zh)
    assert all(zh[k] for k in zh)
    used: set[str] = set()
    for path in [*WEB.rglob("*.js"), WEB / "index.html"]:
        text = path.read_text()
        used |= set(re.findall(r"""(?:\bt\(|field\(|section\(|page\()'([a-z_]+\.[a-z0-9_.-]+)'""", text))
        used |= set(re.findall(r"""data-i18n(?:-[a-z-]+)?="([a-z_]+\.[a-z0-9_.-]+)\"""", text))
        used |= set(re.findall(r"""table\(\[([^\]]+)\]""", text) and re.findall(r"'([a-z]+\.[a-z_]+)'", text))
        # No user-visible text in the markup: every element's text comes from the message files.
        if path.name == "index.html":
            bare = re.sub(r"<(script|title|style)[^>]*>.*?</\1>", "", text, flags=re.S)
            assert not re.search(r">\s*[A-Za-z\u4e00-\u9fff][^<]*<", bare), "text in index.html"
    dynamic = {k for k in used if k.split(".")[0] in {"tuneforge"}}
    missing = sorted(k for k in used - dynamic if k not in en and not k.startswith(("data.", "header.")))
    assert not missing, missing
    for prefix in ("state.", "job.stream_", "newjob.section_"):
        assert any(k.startswith(prefix) for k in en)


def test_every_jobspec_field_has_a_label_and_chinese_help():
    """The job form's labels come from i18n/fields.json by field path; English help is the schema's
    description (its one source), Chinese help the table's. A new JobSpec field needs its entry here."""
    from tuneforge.spec import JobSpec, _section_model

    def paths(model, prefix=""):
        for key, field in model.model_fields.items():
            section = _section_model(field.annotation)
            yield from paths(section, f"{prefix}{key}.") if section else [f"{prefix}{key}"]

    table = json.loads((WEB / "i18n" / "fields.json").read_text())
    spec = set(paths(JobSpec))
    assert not spec - set(table), f"fields without a label and Chinese help: {sorted(spec - set(table))}"
    assert not set(table) - spec, f"entries for no JobSpec field: {sorted(set(table) - spec)}"
    for path, entry in table.items():
        assert entry["en"] and entry["zh"] and entry["zh_help"], path
        assert re.search(r"[\u4e00-\u9fff]", entry["zh_help"]), f"{path}: its Chinese help has no Chinese"


def test_token_length_histogram_bins():
    from collections import Counter

    from tuneforge.data.validate import histogram

    h = histogram(Counter({10: 2, 11: 1, 40: 3, 100: 1}), bins=4)
    assert sum(h["counts"]) == 7 and len(h["edges"]) == len(h["counts"]) + 1
    assert h["edges"][0] == 10 and h["edges"][-1] > 100 and h["counts"][0] == 3
    assert histogram(Counter({5: 4}))["counts"] == [4]
    assert histogram(Counter()) == {"edges": [], "counts": []}


# -- the browser ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the file: a launch is ~1.5 s and 0.5 CPU-s under the suite's load."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is absent: `apt-get install -y chromium` to run the console's browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def browser(chromium):
    """The file's Chromium; a test's pages open in contexts of their own (no cookies or storage shared)
    and are closed when it ends, so none of them goes on polling the test's stopped server."""
    yield chromium
    for context in chromium.contexts:
        context.close()


@pytest.fixture
def console_server(tiny_llama, monkeypatch):
    from tests.platform.test_platform_server import Server
    from tests.support.platformhelp import store_model
    from tuneforge.settings import get_settings

    store_model(tiny_llama, "tiny")
    srv = Server(get_settings().root)
    srv.env["TUNEFORGE_DEFAULT_MODEL"] = "tiny"  # token statistics with the tiny model's tokenizer
    srv.start()
    yield srv
    srv.stop()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, srv) -> None:
    page.goto(srv.url + "/")
    page.wait_for_url(re.compile(r"#/signin"))
    page.get_by_label("Token").fill(srv.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("article.template")


def points(page, series: str) -> int:
    el = page.query_selector(f'svg.chart path[data-series="{series}"]')
    return int(el.get_attribute("data-points")) if el else 0


def switch_language(page, lang: str, wait_for: str) -> None:
    """The language select, then `wait_for` (a selector of the page in that language) on screen."""
    page.select_option("#lang", lang)
    page.wait_for_selector(wait_for)


# Words a Chinese page may show in Latin letters: names of products, formats and methods, and the names
# this suite gives its data. Anything code-like (digits, _ . - / @ :), an acronym, or text inside code,
# pre or translate="no" (records, conversations: the user's data) is not checked.
ALLOWED_LATIN = {
    "tuneforge", "English", "OpenAI", "KServe", "Triton", "LoRA", "QLoRA", "DoRA", "rsLoRA", "NEFTune",
    "Ollama", "Modelfile", "safetensors", "Jinja", "Cookie", "HttpOnly", "Bearer", "Parquet", "zip", "peft",
    "alpaca", "sharegpt", "openai", "conversations", "mapped", "text", "preference", "prompt_completion",
    "tiny", "memo", "transformers", "vllm", "auto", "bitsandbytes", "tensorboard", "PyPI", "gguf",
    "KiB", "MiB", "GiB", "alpha", "beta", "Ctrl+Enter", "SimPO", "perplexity",
    # a record's keys, as a column mapping names them, and alpaca's
    "prompt", "response", "system", "query", "history", "chosen", "rejected", "question", "answer",
    "instruction", "input", "output", "Jaccard",
}  # fmt: skip

ENGLISH_WORDS = """() => {
  const skip = 'code, pre, kbd, samp, script, style, [translate="no"], [data-path] option, '
    + 'select.code option';
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip) || !el.getClientRects().length) continue;
    if (el.closest('[hidden], details:not([open]) > :not(summary)')) continue;
    found.push(n.textContent);
  }
  for (const el of document.querySelectorAll('[placeholder]')) {
    if (el.getClientRects().length) found.push(el.placeholder);
  }
  return found;
}"""


def english_words(page) -> list[str]:
    """The words of the page in Latin letters that are neither code nor on the allow-list."""
    words = []
    for text in page.evaluate(ENGLISH_WORDS):
        for word in re.findall(r"[A-Za-z][A-Za-z0-9_.+@:/'-]*", text):
            word = word.rstrip(".:-'")
            if re.search(r"[\d_./@:-]", word) or word.isupper() or len(word) < 2 or word in ALLOWED_LATIN:
                continue
            words.append(word)
    return words


def test_console_upload_train_register_in_both_languages(console_server, browser, tmp_path):
    srv = console_server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Sign in: every page leads there without a session; a wrong token is a message, not a crash.
    page.goto(srv.url + "/#/jobs")
    page.wait_for_url(re.compile(r"#/signin\?next="))
    page.get_by_label("Token").fill("tf_0000000000000000_wrongwrongwrongwrongwrong")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector(".message.error")
    assert "invalid or missing token" in page.inner_text("#messages")
    assert not page.is_visible("header.top")  # `hidden` wins over its display: flex (no nav, no Sign out)
    shot(page, "01-signin")
    sign_in(page, srv)
    # An empty store says where to begin, with links (a model is there: the dataset is next).
    assert page.is_visible('[data-testid="first-steps"] a:text("Upload a dataset")')
    cards = page.query_selector_all("article.template h3")
    assert [c.inner_text() for c in cards] == list(TEMPLATES)
    shot(page, "02-home")

    # A good dataset: stored, its stats and (from the worker) the token-length histogram.
    good = write(tmp_path / "memo.json", MEMO * 2)
    page.click("header nav >> text=Datasets")
    page.wait_for_selector("td.empty a, td.empty:has-text('upload one')")
    assert not page.is_visible("form > progress")  # no empty upload bar before an upload
    page.set_input_files("#upload-files", str(good))
    page.get_by_label("Name", exact=True).fill("memo")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_url(re.compile(r"#/datasets/ds-"))
    assert page.inner_text('[data-testid="records"]') == str(len(MEMO) * 2)
    page.wait_for_selector("figure.histogram svg rect.bar", timeout=90_000)
    page.wait_for_selector("pre.masked mark")  # trained-on tokens highlighted (the preview follows the stats)
    masked = page.inner_text("pre.masked")
    trained = " ".join(m.inner_text() for m in page.query_selector_all("pre.masked mark"))
    assert "banana seven" in trained and "Say the code word" not in trained and "Say the code word" in masked
    shot(page, "03-dataset")

    # A bad dataset: every problem with its line, nothing stored.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"instruction": "ok", "output": "fine"}\n{not json\n{"instruction": "no answer"}\n'
        '{"instruction": "", "output": ""}\n'
    )
    page.click("text=Datasets")
    page.set_input_files("#upload-files", str(bad))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_selector(".upload-result .problems li")
    problems = [li.inner_text() for li in page.query_selector_all(".upload-result .problems li")]
    assert len(problems) >= 2 and any("line 2" in p or ":2" in p for p in problems), problems
    assert "nothing was stored" in page.inner_text(".upload-result")
    # records counted from 1 beside 1-based lines; the form's words, not the CLI's flags
    assert any(":3 " in p and "record 3 " in p for p in problems), problems
    said = page.inner_text(".upload-result")
    assert "--map" not in said and "Column mapping" in said, said
    shot(page, "04-bad-upload")
    with srv.http() as http:
        assert [d["name"] for d in http.get("/api/v1/datasets").json()["data"]] == ["memo"]

    # New job from the generated form: a 422 lands beside its field; then a valid short run.
    page.goto(srv.url + "/#/jobs/new?template=sft-lora")
    lr = page.locator('[data-path="train.learning_rate"]')
    assert float(lr.input_value()) == pytest.approx(2e-4)  # the template's default, filled in
    assert "Peak learning rate" in page.inner_text(".field:has([data-path='train.learning_rate']) .help")
    lr.fill("-1")
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector("#" + lr.get_attribute("id") + "-error:not(:empty)")
    assert "greater than 0" in page.inner_text("#" + lr.get_attribute("id") + "-error")
    # Grouped: the main settings first, the rest folded; only this template's method's keys.
    assert page.query_selector('[data-path="train.dpo_beta"]') is None
    assert not page.is_visible('[data-path="train.logging_steps"]')
    page.click("summary:text('Advanced settings')")
    # each placeholder says what its help says: "off when empty" / "auto"
    assert page.get_attribute('[data-path="lora.plus_ratio"]', "placeholder") == "off"
    assert page.get_attribute('[data-path="train.eval_steps"]', "placeholder") == "auto"
    for path, value in {
        "train.learning_rate": "0.01",
        "train.max_steps": "150",  # a few seconds: long enough to watch it grow
        "train.logging_steps": "1",
        "train.warmup_ratio": "0",
        "train.save_steps": "50",
        "data.max_len": "64",
        "lora.dropout": "0",
    }.items():
        page.fill(f'[data-path="{path}"]', value)
    page.select_option('[data-path="train.scheduler"]', "constant")
    page.fill('[data-path="extra"]', "train.seed=7")
    # Switching language draws the form again in Chinese with everything typed kept, and back.
    switch_language(page, "zh", "label:has-text('学习率')")
    assert page.input_value('[data-path="train.max_steps"]') == "150"
    assert page.input_value('[data-path="train.scheduler"]') == "constant"
    assert page.input_value('[data-path="extra"]') == "train.seed=7"
    assert "峰值学习率" in page.inner_text(".field:has([data-path='train.learning_rate']) .help")
    switch_language(page, "en", "label:has-text('Learning rate')")
    assert page.input_value('[data-path="data.max_len"]') == "64"
    assert page.is_visible('[data-path="lora.dropout"]')  # "Advanced" stays open
    page.get_by_role("button", name="Show as command").click()
    cli = re.sub(r"\s*\\\n\s*", " ", page.inner_text('[data-testid="cli"]'))  # one flag a line on screen
    assert cli.startswith("tuneforge jobs create --template sft-lora --model tiny --dataset ds-")
    assert "--set train.max_steps=150" in cli and "--set train.learning_rate=0.01" in cli
    assert "--set train.seed=7" in cli  # the extra arguments box
    assert "max_steps: 150" in page.inner_text('[data-testid="yaml"]')
    shot(page, "05-new-job")
    # The first live-log connection is cut: the page must reconnect by itself to show the log.
    cut: list[str] = []

    def cut_first(route):
        if not cut:
            cut.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route(re.compile(r"/logs\?follow=true"), cut_first)
    # Every size the loss line takes on screen, to see it grow as the metrics arrive.
    page.evaluate(
        """() => { window.lossCounts = [];
          new MutationObserver(() => {
            const p = document.querySelector('svg.chart path[data-series="loss"]');
            const seen = window.lossCounts;
            if (p && seen[seen.length - 1] !== +p.dataset.points) seen.push(+p.dataset.points);
          }).observe(document.body, {subtree: true, childList: true, attributes: true}); }"""
    )
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert page.evaluate("window.scrollY") > 300
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"#/jobs/job-"))
    job_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector(f"h1:has-text('{job_id}')")
    assert page.evaluate("window.scrollY") == 0  # the new page from its top, not 700 px down in its log

    # The job page: log lines and the loss chart grow while it runs.
    page.wait_for_function(
        "() => (document.querySelector('pre.log') || {textContent: ''}).textContent.includes('step=')",
        timeout=120_000,
    )
    page.wait_for_function(
        "() => { const p = document.querySelector('svg.chart path[data-series=\"loss\"]');"
        " return p && +p.dataset.points >= 2 }",
        timeout=120_000,
    )
    assert cut, "the log stream was never opened"
    shot(page, "06-job-running")
    page.wait_for_selector(".badge.state-succeeded", timeout=180_000)
    page.wait_for_function(
        "() => +document.querySelector('svg.chart path[data-series=\"loss\"]').dataset.points >= 150"
    )
    grew = page.evaluate("window.lossCounts")
    assert len(grew) >= 2 and grew == sorted(grew) and grew[-1] == 150, grew
    assert points(page, "lr") >= 150
    log_text = page.inner_text("pre.log")
    assert "step=150" in log_text
    timeline = page.inner_text("ol.timeline")
    assert "queued" in timeline and "started" in timeline
    assert not page.query_selector(".message.error"), page.inner_text("#messages")
    shot(page, "07-job")

    # Register the final model; the models page shows its lineage base → job → model.
    page.wait_for_selector('[data-testid="next-steps"] a:text("Register the model")')
    page.get_by_label("Model name").fill("memo-lora")
    page.get_by_role("button", name="Register the final model").click()
    page.wait_for_selector("text=Registered memo-lora@1")
    page.get_by_role("button", name="Register as model").first.click()
    page.wait_for_selector("text=Registered memo-lora@2")
    # Next steps with the registered model: evaluate, deploy, export.
    steps = page.locator('[data-testid="next-steps"] a')
    assert steps.all_inner_texts() == ["Evaluate", "Deploy", "Export"]
    assert steps.nth(0).get_attribute("href") == "#/evaluations?model=memo-lora%402"
    steps.nth(2).click()
    page.wait_for_selector("#export select")
    assert page.locator("#export select").first.input_value() == "memo-lora@2"
    page.click("header nav >> text=Models")
    lineage = page.inner_text("table:has-text('memo-lora@1')")
    assert "tiny → " + job_id in lineage
    shot(page, "08-models")

    # The evaluation form offers the registered model; the new-job form has the command kind.
    page.click("header nav >> text=Evaluations")
    page.wait_for_selector("text=Run an evaluation")
    assert "memo-lora@2" in page.inner_text("select:near(:text('Model'))")
    # A registered model's row: evaluate, deploy, export, delete (asked first).
    page.click("header nav >> text=Models")
    page.wait_for_selector("tr:has-text('memo-lora@2') .actions")
    row = page.locator("tr", has_text="memo-lora@2")
    actions = row.locator(".actions a, .actions button").all_inner_texts()
    assert actions == ["Evaluate", "Deploy", "Export", "Delete"], actions
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Delete").click()
    page.wait_for_selector("text=Deleted memo-lora@2.")
    page.wait_for_selector("tr:has-text('memo-lora@2')", state="detached")
    page.goto(srv.url + "/#/jobs/new")
    page.get_by_label("Kind").select_option("command")
    page.get_by_label("Command", exact=True).fill("python train.py --steps 2")
    assert page.get_by_label("Code (zip, optional)").is_visible()

    # Chinese: the same pages, every text from zh.json.
    page.select_option("#lang", "zh")
    page.wait_for_selector("header nav >> text=数据集")
    page.click("header nav >> text=任务")
    page.wait_for_selector(".badge.state-succeeded")
    assert page.inner_text(".badge.state-succeeded") == "已成功"
    assert "全部任务" in page.inner_text("main")
    shot(page, "09-jobs-zh")
    page.goto(f"{srv.url}/#/jobs/{job_id}")
    page.wait_for_selector("figcaption:has-text('按步的训练与验证损失')")
    # event names, legends and the finished event's metrics (a table, not its JSON) in Chinese
    timeline = page.inner_text("ol.timeline")
    assert "已开始" in timeline and "已完成" in timeline and "{" not in timeline, timeline
    assert page.query_selector("ol.timeline table.kv")
    assert page.text_content("svg.chart text.legend[data-series='loss']") == "训练损失"
    assert not page.query_selector("figure[data-chart]:not([hidden])")  # SFT has no method charts
    check_method_charts(page, srv)
    check_method_forms(page, srv)
    page.select_option("#lang", "en")
    assert not errors, errors


# What the method charts of each kind of job show (web/js/method_charts.js): {chart: legends}, in Chinese.
METHOD_CHARTS = {
    "kto": {"rewards": ["选中回答奖励", "拒绝回答奖励", "奖励差距"], "kl": ["KL 散度"]},
    "grpo": {
        "kl": ["KL 散度"],
        "reward_functions": ["总奖励", "精确匹配", "长度"],
        "length": ["平均长度", "最短", "最长"],
    },
    "rm": {"rewards": ["平均奖励", "奖励差距"], "accuracy": ["准确率"]},
}


# {chart: [[legend, points of its line], …]} of the method charts on screen
SHOWN_CHARTS = """() => Object.fromEntries([...document.querySelectorAll('figure[data-chart]:not([hidden])')]
  .map((f) => [f.dataset.chart, [...f.querySelectorAll('text.legend')].map((t) => [t.textContent,
    +f.querySelector(`path[data-series="${t.dataset.series}"]`).dataset.points])]))"""


def check_method_charts(page, srv) -> None:
    """Finished KTO, GRPO and reward-model jobs whose folders hold the metrics.jsonl those recipes wrote on a
    tiny model (tests/fixtures/method_metrics/; tests/platform/test_method_jobs.py checks a real run logs
    these names): each job page charts its method's metrics, every point, legends in the page's language,
    and the Chinese page has no English."""
    from tuneforge.jobs.folder import METRICS_FILE

    jobs = {}
    for i, method in enumerate(METHOD_CHARTS):
        job_id = f"job-{0xE7000 + i:012x}"
        folder = srv.home / "jobs" / job_id
        folder.mkdir(parents=True)
        recorded = (FIXTURES / "method_metrics" / f"{method}.jsonl").read_text()
        (folder / METRICS_FILE).write_text(recorded)
        jobs[method] = (job_id, [json.loads(line) for line in recorded.splitlines()])
    insert_finished_jobs(srv, *(dict(id=j, folder=str(srv.home / "jobs" / j), step=rows[-1]["step"],
                                     max_steps=rows[-1]["step"], spec={"model": "tiny", "method": m},
                                     created_at=time.time()) for m, (j, rows) in jobs.items()))  # fmt: skip
    for method, (job_id, rows) in jobs.items():
        page.goto(f"{srv.url}/#/jobs/{job_id}")
        steps = len([r for r in rows if "loss" in r])
        # attached: a flat line (a KL of 0) has no height, which Playwright calls invisible
        drawn = f"#view[data-route='/jobs/{job_id}'] figure[data-chart] path[data-points='{steps}']"
        page.wait_for_selector(drawn, state="attached")
        charts = page.evaluate(SHOWN_CHARTS)
        legends = {chart: [label for label, _ in shown] for chart, shown in charts.items()}
        assert legends == METHOD_CHARTS[method], charts
        assert all(n == steps for shown in charts.values() for _, n in shown), charts
        assert not english_words(page), (method, english_words(page))
        shot(page, f"18-job-{method}-zh")
    switch_language(page, "en", "html[lang='en']")
    page.goto(f"{srv.url}/#/jobs/{jobs['grpo'][0]}")
    page.wait_for_selector("figure:not([hidden]) figcaption:text-is('GRPO reward per function by step')")
    legends = page.locator("figure[data-chart='reward_functions'] text.legend").all_text_contents()
    assert legends == ["total reward", "exact match", "length"], legends
    shot(page, "18-job-grpo-en")


def check_method_forms(page, srv) -> None:
    """The new-job form of a preference or GRPO template shows that method's own settings up front (the
    preference losses' beta is train.dpo_beta), and no other method's."""
    forms = {  # template: (fields shown, fields absent)
        "kto-lora": (["train.dpo_beta", "train.kto_desirable_weight"], ["train.cpo_alpha", "grpo.beta"]),
        "simpo-lora": (["train.dpo_beta", "train.simpo_gamma", "train.cpo_alpha"], ["grpo.beta"]),
        "grpo-lora": (["grpo.num_generations", "grpo.beta"], ["train.dpo_beta"]),
        "sft-lora": ([], ["train.dpo_beta", "train.cpo_alpha", "grpo.num_generations"]),
    }  # fmt: skip
    on_screen = "(t) => (document.querySelector(`select[data-path='template']`) || {}).value === t"
    for template, (shown, absent) in forms.items():
        page.goto(f"{srv.url}/#/jobs/new?template={template}")
        page.wait_for_function(on_screen, arg=template)
        for path in shown:
            assert page.is_visible(f"[data-path='{path}']"), (template, path)
        for path in absent:
            assert page.query_selector(f"[data-path='{path}']") is None, (template, path)
    shot(page, "19-new-grpo-job")


def insert_finished_jobs(srv, *jobs: dict) -> None:
    """Rows of finished training jobs written straight into the console server's database."""
    from sqlalchemy import create_engine, insert

    from tuneforge.platform.db import Job

    common = dict(
        kind="train", state="succeeded", spec={"model": "tiny"}, priority=0, gpus=0, restart_policy="never",
        max_retries=0, attempt=1, cancel_requested=False, latest_metrics={}, extra={},
    )  # fmt: skip
    engine = create_engine(f"sqlite:///{srv.home / 'tuneforge.db'}")
    with engine.begin() as conn:
        conn.execute(insert(Job), [{**common, **job} for job in jobs])
    engine.dispose()


def test_jobs_page_loads_fast_with_a_thousand_jobs(console_server, browser):
    """1,000 jobs in the store; the list shows a page of 50 (cursor pagination) in well under 300 ms."""
    srv = console_server
    now = time.time()
    insert_finished_jobs(
        srv,
        *(
            dict(
                id=f"job-{i:012x}",
                folder=str(srv.home / "jobs" / f"job-{i:012x}"),
                step=10,
                max_steps=10,
                latest_metrics={"loss": 1.0 + i / 1000},
                created_at=now - i,
            )
            for i in range(1000)
        ),
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, srv)
    timings = []
    for _ in range(5):
        page.goto(srv.url + "/#/")
        page.wait_for_selector("article.template")
        ms = page.evaluate(
            """() => new Promise((done) => {
                 const t0 = performance.now();
                 const seen = () => document.querySelectorAll('main tbody tr').length === 50
                   && document.querySelector('.pager');
                 const obs = new MutationObserver(() => {
                   if (seen()) { obs.disconnect(); done(performance.now() - t0); }
                 });
                 obs.observe(document.getElementById('view'), {childList: true, subtree: true});
                 location.hash = '#/jobs';
               })"""
        )
        timings.append(ms)
    shot(page, "10-jobs-1000")
    median = statistics.median(timings)
    print(f"jobs page with 1000 jobs: median {median:.0f} ms of {[round(t) for t in timings]}")
    assert median < 300, timings
    page.get_by_role("link", name="Older →").click()
    page.wait_for_selector("text=Page 2")
    first = page.inner_text("main tbody tr:first-child td:first-child")
    assert first.startswith("job-0000000000") and first != "job-000000000000"


# One problem of each common kind: invalid JSON, a missing field, a field of the wrong type, a record that
# is not an object.
BAD_UPLOAD = (
    '{"instruction": "ok", "output": "fine"}\n{not json\n{"instruction": "no answer"}\n'
    '{"instruction": "x", "output": true}\n[1, 2]\n'
)


REFUSED_ZH = "未通过门槛 eval_loss<=0.001：候选模型 eval_loss=6.732，线上模型 eval_loss=7.052"


def _record_refused_promotion(name: str, candidate: str, dataset: str) -> str:
    """A promotion onto deployment ``name`` as the supervisor records its refusal (the gate's decision and
    the ``promote`` and ``refused`` events; rollouts.py) without running its two evaluations. The decision's
    English."""
    from sqlalchemy import select

    from tuneforge.platform import deployments
    from tuneforge.platform.app import database_url
    from tuneforge.platform.db import Deployment, Store
    from tuneforge.platform.gate import decide, parse_gate
    from tuneforge.settings import get_settings

    scores = {"candidate": {"eval_loss": 6.731775, "perplexity": 838.6342, "rouge-l": 0.0},
              "live": {"eval_loss": 7.051539, "perplexity": 1154.6345, "rouge-l": 0.0}}  # fmt: skip
    gate = "eval_loss<=0.001"
    d = decide(parse_gate(gate), scores["candidate"], scores["live"])
    store = Store(database_url(get_settings()))
    with store.session() as s:
        row = s.scalars(select(Deployment).where(Deployment.name == name)).one()
        asked = {"model": candidate, "live_model": row.model, "dataset": dataset, "gate": gate, "share": 0.1}
        deployments.add_event(s, row.id, "promote", code="promote_evaluating", **asked)
        deployments.add_event(s, row.id, "refused", code=d.code, **d.params, scores=scores)
        row.rollout = {**asked, "stage": "refused", "scores": scores, "decision": d.message,
                       "decision_code": d.code, "decision_params": d.params}  # fmt: skip
    store.dispose()
    return d.message


def test_console_deploy_and_playground_side_by_side(console_server, browser, tmp_path):
    srv = console_server
    with srv.http() as http:
        if "/api/v1/deployments" not in http.get("/openapi.json").json()["paths"]:
            pytest.skip("the server has no /api/v1/deployments yet (issue 7b): runs once it is merged")
        ds = http.post(
            "/api/v1/datasets", files=[("files", ("memo.json", json.dumps(MEMO * 2)))], data={"name": "memo"}
        ).json()
        # a dataset with a warning of each kind the checks give (duplicates, an empty answer, a number)
        odd = [*MEMO[:2], MEMO[0], {"instruction": "Nil", "output": ""}, {"instruction": "2+2", "output": 4}]
        warned = http.post("/api/v1/datasets", files=[("files", ("memo-odd.json", json.dumps(odd)))]).json()
        kinds = {w["code"] for w in warned["warnings"]}
        assert kinds == {"exact_duplicates", "empty_answers", "numbers_as_text"}, warned["warnings"]
        overrides = {"train.max_steps": 2, "data.max_len": 64, "train.logging_steps": 1}
        job = http.post(
            "/api/v1/jobs",
            json={"template": "sft-lora", "model": "tiny", "datasets": [ds["id"]], "overrides": overrides},
        ).json()
        deadline = time.monotonic() + 180
        while http.get(f"/api/v1/jobs/{job['id']}").json()["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert (
            http.post("/api/v1/models/register", json={"job": job["id"], "name": "memo-lora"}).status_code
            == 201
        )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, srv)
    for model, name in (("memo-lora@1", "memo-ft"), ("tiny", "tiny-base")):
        page.goto(f"{srv.url}/#/deployments?model={model}")
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_role("button", name="Deploy", exact=True).click()
        page.wait_for_url(re.compile(rf"#/deployments/{name}$"))
        page.wait_for_selector(f"h1:has-text('{name}')")  # its page, not the list still on screen
    # Both start at once; the list follows them until they are ready (no reload).
    page.click("header nav >> text=Deployments")
    page.wait_for_selector("main tbody .badge.state-starting, main tbody .badge.state-ready")
    page.wait_for_function(
        "() => document.querySelectorAll('main tbody .badge.state-ready').length === 2", timeout=180_000
    )
    page.goto(f"{srv.url}/#/deployments/tiny-base")
    page.wait_for_selector("h1 + div .badge.state-ready")
    page.get_by_role("button", name="Create a token").click()
    token = page.inner_text('[data-testid="token"]')
    # The token is shown once: switching language keeps it, with the curl filled in.
    switch_language(page, "zh", "h2:text('部署令牌')")
    assert page.inner_text('[data-testid="token"]') == token and token in page.inner_text("main")
    switch_language(page, "en", "h2:text('Deployment token')")
    examples = page.inner_text("main")
    assert (
        token in examples
        and "/v2/models/tiny-base/infer" in examples
        and "/v2/models/tiny-base/generate" in examples
    )
    with httpx.Client(base_url=srv.url, timeout=60) as c:  # the shown token and the prefilled request work
        r = c.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert r.status_code == 200, r.text
    # scale from the page: the replicas line follows the second worker until it is ready
    page.locator("form.inline input[type=number]").fill("2")
    page.get_by_role("button", name="Scale", exact=True).click()
    page.wait_for_selector("dd:has-text('2/2')", timeout=120_000)
    with srv.http() as http:
        assert len(http.get("/api/v1/deployments/tiny-base").json()["workers"]) == 2
    shot(page, "11-deployment")
    page.goto(f"{srv.url}/#/playground?a=memo-ft&b=tiny-base")
    page.wait_for_selector('[data-testid="transcript-1"]')
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Message", exact=True).fill("Say the code word.")
    page.get_by_role("button", name="Send").click()
    for i in (0, 1):
        page.wait_for_selector(f'[data-testid="transcript-{i}"] .turn.assistant[data-done]', timeout=120_000)
    shot(page, "12-playground")
    for i in (0, 1):
        turn = page.query_selector(f'[data-testid="transcript-{i}"] .turn.assistant')
        assert turn.get_attribute("data-done") == "true", turn.inner_text()
        assert turn.query_selector(".reply").inner_text().strip()
    # Switching language keeps the conversation and the side-by-side tick.
    said = [page.inner_text(f'[data-testid="transcript-{i}"]') for i in (0, 1)]
    page.get_by_label("Message", exact=True).fill("a draft")
    switch_language(page, "zh", "h1:text('体验')")
    assert page.is_checked('[data-testid="side-by-side"]') and page.input_value("textarea") == "a draft"
    assert all("Say the code word." in page.inner_text(f'[data-testid="transcript-{i}"]') for i in (0, 1))
    switch_language(page, "en", "h1:text('Playground')")
    assert [page.inner_text(f'[data-testid="transcript-{i}"]') for i in (0, 1)] == said

    # Tokens: create one for a deployment with an expiry (shown once), it calls that deployment; revoked, not.
    page.click("header nav >> text=Tokens")
    page.get_by_label("Name", exact=True).fill("app-one")
    page.get_by_label("Scope").select_option("deployment:tiny-base")
    page.get_by_label("Expires").select_option("7d")
    page.get_by_role("button", name="Create token").click()
    secret = page.inner_text('[data-testid="new-token"]')
    row = page.locator("tr", has_text="app-one")
    assert "deployment tiny-base" in row.inner_text() and "active" in row.inner_text()
    chat = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        bearer = {"Authorization": f"Bearer {secret}"}
        assert c.post("/v1/chat/completions", headers=bearer, json=chat).is_success
        page.once("dialog", lambda d: d.accept())
        row.get_by_role("button", name="Revoke").click()
        page.wait_for_selector("tr:has-text('app-one') .badge.state-revoked")
        refused = c.post("/v1/chat/completions", headers=bearer, json=chat)
        assert refused.status_code == 401
    shot(page, "17-tokens")

    # Every page in both languages (screenshots kept); the Chinese ones show no English outside code. The
    # deployment page shows a promotion the gate refused: its decision and events from their codes.
    decision = _record_refused_promotion("tiny-base", candidate="memo-lora@1", dataset="memo")
    pages = {
        "home": "/", "datasets": "/datasets", "dataset": f"/datasets/{ds['id']}", "models": "/models",
        "dataset-warnings": f"/datasets/{warned['id']}",
        "jobs": "/jobs", "new-job": "/jobs/new", "job": f"/jobs/{job['id']}", "evaluations": "/evaluations",
        "deployments": "/deployments", "deployment": "/deployments/tiny-base", "playground": "/playground",
        "tokens": "/tokens",
    }  # fmt: skip
    english: dict[str, list[str]] = {}
    for lang in ("en", "zh"):
        switch_language(page, lang, f"html[lang^='{lang}']")
        for name, path in pages.items():
            page.goto(f"{srv.url}/#{path}")
            page.wait_for_selector(f"#view[data-route='{path}'] h1")
            if name == "job":
                page.wait_for_selector("ol.timeline li")
            if name == "dataset-warnings":
                page.wait_for_selector("ul.problems li")
            if name == "deployment":  # its events (created … scaled, promote, refused), from their codes
                page.wait_for_selector("ol.timeline li:nth-child(4)")
                said = page.inner_text('[data-testid="decision"] > span')
                assert said == {"en": decision, "zh": REFUSED_ZH}[lang], said
                assert said in page.inner_text("ol.timeline")  # the refused event says it the same way
            if name == "datasets":  # a bad upload's problems, one of each common kind
                bad = write(tmp_path / f"bad-{lang}.jsonl", BAD_UPLOAD)
                page.set_input_files("#upload-files", str(bad))
                page.get_by_role("button", name={"en": "Upload", "zh": "上传"}[lang], exact=True).click()
                page.wait_for_selector(".upload-result .problems li:nth-child(4)")
            assert page.evaluate("window.scrollY") == 0, name
            page.screenshot(path=str(ARTIFACTS / f"page-{lang}-{name}.png"), full_page=True)
            if lang == "zh" and (words := english_words(page)):
                english[name] = sorted(set(words))
    switch_language(page, "en", "html[lang='en']")
    assert not english, f"English on Chinese pages: {json.dumps(english, ensure_ascii=False)}"

    # The fine-tuned deployment (one replica) stopped, started and deleted from its page.
    _stop_start_delete(srv, browser, "memo-ft")


def test_console_pull_and_import_show_progress_then_model_or_error(console_server, browser, tiny_llama):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, console_server)
    page.goto(console_server.url + "/#/models")
    page.get_by_label("Path on the server").fill(str(tiny_llama))
    page.get_by_label("Name (optional)").fill("tiny-ui")
    page.get_by_role("button", name="Import", exact=True).click()
    # While the worker runs: the bar and the stage text (from the pull's progress), then the new model.
    page.wait_for_selector(".pull-status:text-matches('Starting|Copying')")
    # a worker process (imports, then the copy): 30 s, Playwright's default, ran out at load 30
    page.wait_for_selector("text=Imported tiny-ui.", timeout=120_000)
    assert page.inner_text(".pull-status") == "" and page.is_enabled("button:text-is('Import')")
    page.wait_for_selector("table td strong:text-is('tiny-ui')")
    # A pull that fails shows the worker's message.
    page.get_by_label("Model name").fill("no-such-model")
    page.get_by_role("button", name="Pull", exact=True).click()
    error = page.wait_for_selector(".message.error", timeout=120_000)
    assert "no model called 'no-such-model'" in error.inner_text()
    shot(page, "models-pull")


def test_console_export_shows_progress_then_download_links(console_server, browser):
    """LLaMA-Factory's Export tab: model, format, quantization → the worker's stages → the files."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, console_server)
    page.goto(console_server.url + "/#/models")
    page.get_by_label("Model", exact=True).select_option("tiny")
    assert page.is_disabled("#" + page.get_by_label("Register as a new version").get_attribute("id"))
    page.get_by_label("Quantization (GGUF)").select_option("q8_0")
    page.get_by_role("button", name="Export", exact=True).click()
    page.wait_for_selector(".pull-status:text-matches('Starting|Loading|Writing')")
    page.wait_for_selector("text=Exported tiny.", timeout=300_000)
    links = page.locator(".export-files a")
    assert sorted(links.all_inner_texts()) == ["Modelfile", "tiny.q8_0.gguf"]
    shot(page, "models-export")
    # the link downloads with the session cookie, as a click would
    href = page.locator(".export-files a", has_text=".gguf").get_attribute("href")
    got = page.request.get(console_server.url + href)
    assert got.status == 200 and got.body()[:4] == b"GGUF"


# The command job's script: the environment variable, its argument and the mounted dataset, in its log.
JOB_SCRIPT = """
import json, os, shutil, sys
files = sorted(os.listdir("inputs/memo"))
records = sum(len(json.load(open(os.path.join("inputs/memo", f)))) for f in files)
print(os.environ["GREETING"], "|", sys.argv[1], "|", records, "records in", ",".join(files), flush=True)
shutil.copytree("base", os.path.join(os.environ["TUNEFORGE_OUTPUT_DIR"], "model"))  # "its trained model"
"""


def test_console_command_job_with_code_dataset_and_env_runs_to_its_log(console_server, browser, tmp_path):
    import zipfile

    srv = console_server
    with srv.http() as http:
        ds = http.post(
            "/api/v1/datasets", files=[("files", ("memo.json", json.dumps(MEMO)))], data={"name": "memo"}
        ).json()
    code = tmp_path / "code.zip"
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("job.py", JOB_SCRIPT)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, srv)
    page.goto(srv.url + "/#/jobs/new")
    page.get_by_label("Kind").select_option("command")
    page.get_by_label("Name", exact=True).fill("hello")
    page.get_by_label("Command", exact=True).fill('python job.py "two words"')
    page.get_by_label("Code (zip, optional)").set_input_files(str(code))
    page.get_by_label("Environment").fill("GREETING=hello from the job")
    page.get_by_label("Dataset to mount").select_option(ds["id"])
    page.get_by_label("…at path").first.fill("inputs/memo")
    page.get_by_label("Model to mount").select_option("tiny")
    page.get_by_label("…at path").nth(1).fill("base")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"#/jobs/job-"))
    job_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector(".badge.state-succeeded", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('pre.log').textContent.includes('records in')", timeout=10_000
    )
    shot(page, "13-command-job")
    with srv.http() as http:
        job = http.get(f"/api/v1/jobs/{job_id}").json()
        files = [f["path"] for f in http.get(f"/api/v1/datasets/{ds['id']}/files").json()["data"]]
    assert job["kind"] == "command" and job["state"] == "succeeded", job
    # The script saw the environment, its quoted argument, and the dataset's records at the path asked for.
    log = page.inner_text("pre.log")
    printed = f"hello from the job | two words | {ds['records']} records in {','.join(sorted(files))}"
    assert printed in log, log
    assert page.inner_text("dl.facts dd:first-of-type") == "command"
    assert "python job.py two words" in page.inner_text("dl.facts")  # the Command row, not an empty Model
    # A script's output has no final/: register the folder it wrote, with the base it mounted.
    page.get_by_label("Model name").fill("hello-model")
    page.get_by_label("Folder in the job").fill("output/model")
    assert page.get_by_label("Base model", exact=True).input_value() == "tiny"  # the model it mounted
    page.get_by_role("button", name="Register this folder").click()
    page.wait_for_selector(".message.info:has-text('Registered hello-model@1')")
    with srv.http() as http:
        registered = http.get("/api/v1/models/registered/hello-model").json()
    assert registered["job"] == job_id and registered["path"].endswith("output/model"), registered
    assert not page.query_selector(".message.error") and not errors, errors


def _table(page, selector: str) -> dict[str, dict[str, str]]:
    """A table with a header row and a header cell per row: {row name: {column: text}}."""
    return page.evaluate(
        """(sel) => { const t = document.querySelector(sel);
             const cols = [...t.querySelectorAll('thead th')].slice(1).map((th) => th.textContent);
             return Object.fromEntries([...t.querySelectorAll('tbody tr')].map((tr) => [
               tr.querySelector('th').textContent,
               Object.fromEntries([...tr.querySelectorAll('td')].map((td, i) => [cols[i], td.textContent])),
             ]));
           }""",
        selector,
    )


def test_console_evaluation_shows_metrics_and_predictions_when_it_ends(console_server, browser):
    srv = console_server
    with srv.http() as http:
        ds = http.post(
            "/api/v1/datasets", files=[("files", ("memo.json", json.dumps(MEMO)))], data={"name": "memo"}
        ).json()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, srv)
    page.click("header nav >> text=Evaluations")
    page.wait_for_selector("text=Run an evaluation")
    page.get_by_label("Model", exact=True).select_option("tiny")
    page.get_by_label("Dataset", exact=True).select_option(ds["id"])
    page.get_by_label("Compare with the base model").check()
    page.get_by_label("Max samples").fill("2")
    page.get_by_label("Max new tokens").fill("4")
    page.get_by_role("button", name="Run", exact=True).click()
    card = page.wait_for_selector("article[data-eval]")
    eval_id = card.get_attribute("data-eval")
    assert page.is_disabled("button:text-is('Run')")  # one click, one evaluation, until it ends
    assert card.inner_text().startswith("tiny × memo")  # the dataset by its name, not its id
    # No reload: the list follows the running evaluation until its metrics are in.
    page.wait_for_selector(f"article[data-eval='{eval_id}'] .badge.state-succeeded", timeout=90_000)
    with srv.http() as http:
        ev = http.get(f"/api/v1/evaluations/{eval_id}").json()
        preds = http.get(f"/api/v1/evaluations/{eval_id}/predictions").json()["data"]
    assert ev["state"] == "succeeded" and set(ev["metrics"]) == {"tiny", "tiny (base)"}, ev
    shown = _table(page, f"article[data-eval='{eval_id}'] table")
    assert set(shown) == set(ev["metrics"])
    for name, metrics in ev["metrics"].items():
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        assert set(shown[name]) == set(numeric) and numeric["samples"] == 2, (shown, metrics)
        for key, value in numeric.items():
            assert float(shown[name][key].replace(",", "")) == pytest.approx(value, rel=1e-3, abs=1e-6), key
    page.get_by_role("button", name="Show predictions").click()
    rows = page.wait_for_selector(f"article[data-eval='{eval_id}'] table:has(th:text-is('Reference'))")
    cells = [
        [td.inner_text() for td in row.query_selector_all("td")]
        for row in rows.query_selector_all("tbody tr")
    ]
    assert len(cells) == len(preds) == 2
    for (prompt, reference, prediction, base), p in zip(cells, preds, strict=True):
        assert reference == p["reference"] and prediction == p["prediction"] and base == p["prediction_base"]
        assert f"user: {p['prompt'][-1]['content']}" in prompt  # the messages, not their JSON
    assert [c[1] for c in cells] == [MEMO[0]["output"], MEMO[1]["output"]]
    assert page.is_enabled("button:text-is('Run')")
    shot(page, "14-evaluation")
    # The evaluation's job page: a link to these results; nothing to register, no training curves.
    page.goto(f"{srv.url}/#/jobs/{ev['job']}")
    page.wait_for_selector("#view[data-route^='/jobs/job-'] a[href='#/evaluations']")
    assert not page.query_selector("button:has-text('Register')") and not page.query_selector("svg.chart")
    assert not page.query_selector(".message.error") and not errors, errors


def _stop_start_delete(srv, browser, name: str) -> None:
    """Stop, start and delete the ready deployment ``name`` from its page (folded into the deploy test: a
    server, a browser and a worker start of its own cost this file about 50 s)."""
    from tuneforge.jobs.executor import process_start_ticks

    def api() -> dict:
        with srv.http() as http:
            return http.get(f"/api/v1/deployments/{name}").json()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, srv)
    page.goto(f"{srv.url}/#/deployments/{name}")
    page.wait_for_selector("h1 + div .badge.state-ready", timeout=120_000)
    (first,) = [w["pid"] for w in api()["workers"]]
    assert process_start_ticks(first) is not None

    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_selector("h1 + div .badge.state-stopped")
    page.wait_for_selector("#messages :text('Stopped.')")
    after = api()
    assert after["state"] == "stopped" and after["workers"] == [], after
    assert process_start_ticks(first) is None  # the worker process is gone, not only out of rotation
    assert page.get_by_role("button", name="Start", exact=True).is_visible()
    shot(page, "15-deployment-stopped")

    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_selector("h1 + div .badge.state-ready", timeout=120_000)
    (second,) = [w["pid"] for w in api()["workers"]]
    assert second != first and process_start_ticks(second) is not None

    # Delete asks first: dismissed, nothing happens; accepted, back to the list and the API says 404.
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_selector("h1 + div button:text-is('Delete'):enabled")
    assert api()["state"] == "ready" and "Deleted." not in page.inner_text("#messages")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_url(re.compile(r"#/deployments$"))
    page.wait_for_selector("#messages :text('Deleted.')")
    page.wait_for_selector("h1:text-is('Deployments')")
    assert page.locator("main tbody tr", has_text=name).count() == 0
    with srv.http() as http:
        assert http.get(f"/api/v1/deployments/{name}").status_code == 404
    assert process_start_ticks(second) is None
    shot(page, "16-deployment-deleted")
    assert not page.query_selector(".message.error") and not errors, errors
