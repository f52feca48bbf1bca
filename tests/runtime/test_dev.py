"""`cortex dev`: hot reload keeps the last good version on errors and drops no run under load."""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from cortexlang.cli.run_cmds import _dev_compiler
from runtime.dev import DevServer
from tests.runtime.orchestrator.conftest import EXAMPLES, run_async, sales_db_master, sim_factory  # noqa: F401


@pytest.fixture
def project(tmp_path: Path, sales_db_master: Path) -> Path:  # noqa: F811
    shutil.copy(EXAMPLES / "nl2sql.cortex", tmp_path / "nl2sql.cortex")
    shutil.copytree(EXAMPLES / "prompts", tmp_path / "prompts")
    (tmp_path / "data").mkdir()
    shutil.copy(sales_db_master, tmp_path / "data" / "sales.db")
    return tmp_path / "nl2sql.cortex"


def slow_sql(stage: str, prompt: str) -> str:
    return "SELECT COUNT(*) FROM customers -- " + "pad " * 60 + ";"


def server(path: Path, engines: list | None = None, speedup: float = 100) -> DevServer:
    compile_spec = _dev_compiler(None, None)
    spec, _ = compile_spec(path)
    assert spec is not None
    return DevServer(path, spec, sim_factory(slow_sql, speedup=speedup, engines=engines), compile_fn=compile_spec,
                     report=lambda text: None)


def test_a_broken_save_keeps_the_last_good_version(project: Path) -> None:
    async def body() -> None:
        dev = server(project)
        await dev.orchestrator.start()
        try:
            good = project.read_text()
            project.write_text(good.replace("flow {", "flow {\n  generate -> nowhere"))
            assert await dev.reload() is False and dev.failed_reloads == 1
            assert dev.orchestrator.version("nl2sql").number == 1
            assert (await dev.orchestrator.run({"question": "q"})).status == "done"
            project.write_text(good)
            assert await dev.reload() is True and dev.orchestrator.version("nl2sql").number == 2
        finally:
            await dev.orchestrator.stop()

    run_async(body())


def test_hot_reload_under_load_drops_no_run(project: Path) -> None:
    engines: list = []

    async def body() -> None:
        dev = server(project, engines, speedup=50)
        orch = dev.orchestrator
        await orch.start()
        try:
            first_pools = dict(orch.version().pools)
            before = [await orch.submit({"question": f"before {i}"}) for i in range(24)]
            await asyncio.sleep(0.02)
            # A prompt edit: same pools and engines, new workflow version.
            prompt = project.parent / "prompts" / "nl2sql_generate.j2"
            prompt.write_text(prompt.read_text().replace("Reply with the SQL only", "Reply with SQL only"))
            project.write_text(project.read_text() + "\n")
            assert await dev.reload() is True
            assert orch.version().pools == first_pools  # nothing restarted
            middle = [await orch.submit({"question": f"middle {i}"}) for i in range(12)]
            # An engine change (context length): new pools; the old ones stop once their runs are done.
            project.write_text(project.read_text().replace("max_context = 2048", "max_context = 1536"))
            assert await dev.reload() is True
            assert orch.version().pools["generate"] is not first_pools["generate"]
            after = [await orch.submit({"question": f"after {i}"}) for i in range(12)]
            infos = await asyncio.gather(*(orch.wait(r.run_id, timeout_s=60) for r in before + middle + after))
            await asyncio.sleep(0.05)
        finally:
            await orch.stop()
        assert [i.status for i in infos] == ["done"] * 48  # zero dropped
        assert {i.version for i in infos[:24]} == {1}
        assert {i.version for i in infos[24:36]} == {2}
        assert {i.version for i in infos[36:]} == {3}
        old_generate = first_pools["generate"].replicas[0].engine
        assert (await old_generate.health()).state == "stopped"

    run_async(body(), timeout_s=90)


def test_the_watcher_reloads_on_save(project: Path) -> None:
    async def body() -> None:
        dev = server(project)
        await dev.orchestrator.start()
        dev.start_watching()
        try:
            await asyncio.sleep(0.3)  # let the watcher arm
            project.write_text(project.read_text().replace("max_tokens    = 96", "max_tokens    = 80", 1))
            for _ in range(100):
                if dev.reloads:
                    break
                await asyncio.sleep(0.1)
            assert dev.reloads == 1
            assert dev.orchestrator.version().knobs.max_tokens["fix"] in (80, 96)
            assert 80 in dev.orchestrator.version().knobs.max_tokens.values()
        finally:
            await dev.stop_watching()
            await dev.orchestrator.stop()

    run_async(body())


def test_saving_a_tool_module_redeploys_it_and_runs_in_flight_keep_theirs(tmp_path: Path) -> None:
    """The ReAct example in a scratch folder, its tool package under a unique name (sys.modules is
    process-wide): editing calculator.py and reloading gives the new version the edited tool."""
    pkg = f"tools_{uuid.uuid4().hex[:8]}"
    shutil.copytree(EXAMPLES / "tools", tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(EXAMPLES / "prompts", tmp_path / "prompts")
    (tmp_path / "data").mkdir()
    shutil.copy(EXAMPLES / "data" / "catalog.py", tmp_path / "data" / "catalog.py")
    path = tmp_path / "react_agent.cortex"
    path.write_text((EXAMPLES / "react_agent.cortex").read_text().replace('"tools.', f'"{pkg}.'))
    question = {"question": "What is 6 * 7?", "think": {"input": "6 * 7"}}

    async def body() -> None:
        dev = server(path)
        await dev.orchestrator.start()
        try:
            before = dev.orchestrator.version("react_agent").tools["calculate"].func
            assert before(question)["value"] == 42
            calculator = tmp_path / pkg / "calculator.py"
            calculator.write_text(calculator.read_text() + (
                "\n\n_plain = calculate\n\n\ndef calculate(ctx):\n    return {**_plain(ctx), 'edited': True}\n"))
            assert await dev.reload() is True
            after = dev.orchestrator.version("react_agent").tools["calculate"].func
            assert after(question)["edited"] is True and after(question)["value"] == 42
            assert "edited" not in before(question)  # a run in flight keeps its version's tool
        finally:
            await dev.orchestrator.stop()
            for name in [m for m in sys.modules if m.partition(".")[0] == pkg]:
                del sys.modules[name]

    run_async(body())
