"""The notebook route, the Python client and `codeinterp run --server`, against a live `codeinterp serve`."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest
from cli_support import CLI

from gateway.client import APIError, AsyncClient, Client
from tests.gateway.gateway_support import ServerProcess, labelled_containers

pytestmark = pytest.mark.docker

PLOT = "import matplotlib.pyplot as plt\nprint('plotting')\nplt.plot([1, 3, 2])\nplt.show()\n"


@pytest.fixture(scope="module")
def server(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("cli-gateway")
    process = ServerProcess(run_id, base / "data", base).start()  # labels every container with the run id
    yield process
    process.stop()
    assert process.sweep() == [], "the server left containers behind"


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, timeout=120) as api:
        yield api


def test_streamed_thread_call_yields_deltas_then_the_call(client: Client, server: ServerProcess) -> None:
    events = list(client.stream_thread_call("thread_cli_stream", "print('a')\nprint('b')"))
    *deltas, call = events
    assert deltas[0]["code_interpreter"]["input"] == "print('a')\nprint('b')"
    logs = "".join(o.get("logs", "") for d in deltas for o in d["code_interpreter"]["outputs"])
    assert logs == "a\nb\n"
    assert call["status"] == "completed" and call["id"] == deltas[0]["id"]
    assert call["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "a\nb\n"}]
    assert labelled_containers(*server.labels), "the thread's sandbox carries the run label"


def test_thread_notebook_keeps_the_image(client: Client, server: ServerProcess) -> None:
    client.thread_call("thread_cli_nb", "x = 5")
    call = client.thread_call("thread_cli_nb", PLOT)
    [image] = [o for o in call["code_interpreter"]["outputs"] if o["type"] == "image"]
    stored = httpx.get(f"{server.url}/v1/files/{image['image']['file_id']}/content").content

    document = client.notebook(thread_id="thread_cli_nb")
    nbformat.validate(nbformat.from_dict(document))
    first, second = document["cells"]
    assert (first["source"], first["execution_count"], first["outputs"]) == ("x = 5", 1, [])
    assert second["source"] == PLOT and second["execution_count"] == 2
    assert second["outputs"][0] == {"output_type": "stream", "name": "stdout", "text": "plotting\n"}
    assert base64.b64decode(second["outputs"][1]["data"]["image/png"]) == stored

    response = httpx.get(f"{server.url}/v1/threads/thread_cli_nb/code_interpreter/notebook")
    assert response.headers["content-type"] == "application/x-ipynb+json"
    with pytest.raises(APIError) as caught:
        client.notebook(thread_id="thread_without_sandbox")
    assert caught.value.status == 404 and caught.value.param == "thread_id"


async def test_async_client_calls_and_notebook_on_a_container(server: ServerProcess) -> None:
    async with AsyncClient(server.url, timeout=120) as api:
        container = await api.create_container("cli-async")
        try:
            deltas = [event async for event in api.stream_call(container["id"], "y = 6 * 7\nprint(y)")]
            assert deltas[-1]["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "42\n"}]
            document = await api.notebook(container_id=container["id"])
        finally:
            await api.delete_container(container["id"])
    nbformat.validate(nbformat.from_dict(document))
    assert [c["source"] for c in document["cells"]] == ["y = 6 * 7\nprint(y)"]


def test_run_against_the_server_saves_files_and_the_notebook(cli: CLI, tmp_path: Path, sales_csv: Path,
                                                              server: ServerProcess) -> None:
    code = PLOT + "n = open('/mnt/data/rows.txt', 'w').write(str(len(open('/mnt/data/sales.csv').readlines())))\n"
    (tmp_path / "plot.py").write_text(code)
    ran = cli("run", "plot.py", "-f", str(sales_csv), "-o", "out", "--server", server.url,
              "--notebook", "server.ipynb")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "plotting\n"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["display-1.png", "rows.txt"]
    assert (out / "rows.txt").read_text() == "4"
    notebook = nbformat.read(tmp_path / "server.ipynb", as_version=4)
    nbformat.validate(notebook)
    [cell] = notebook.cells
    assert base64.b64decode(cell.outputs[1].data["image/png"]) == (out / "display-1.png").read_bytes()
