"""What every MCP transport must do, checked through the official SDK's own client session."""

from __future__ import annotations

import base64

import mcp_types as types
import pytest
from mcp import ClientSession, MCPError

PLOT = """
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [4, 1, 9])
plt.show()
"""


def texts(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def call(session: ClientSession, tool: str, /, **arguments: object) -> types.CallToolResult:
    return await session.call_tool(tool, arguments)


async def ok(session: ClientSession, tool: str, /, **arguments: object) -> types.CallToolResult:
    result = await call(session, tool, **arguments)
    assert not result.is_error, texts(result)
    return result


async def check_tools(session: ClientSession, timeout: str) -> None:
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == {"run_python", "upload_file", "list_files", "download_file", "restart"}
    described = tools["run_python"].description or ""
    for needed in ("/mnt/data", "persist", "no network", f"{timeout} seconds"):
        assert needed in described.lower() if needed == "no network" else needed in described, needed
    assert tools["run_python"].input_schema["required"] == ["code"]


async def check_state_image_and_errors(session: ClientSession) -> None:
    await ok(session, "run_python", code="x = 41")
    assert texts(await ok(session, "run_python", code="print(x + 1)")).strip() == "42"

    plotted = await ok(session, "run_python", code=PLOT)
    images = [c for c in plotted.content if isinstance(c, types.ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG\r\n\x1a\n")

    failed = await call(session, "run_python", code="1 / 0")
    assert failed.is_error
    assert "ZeroDivisionError" in texts(failed)
    assert texts(await ok(session, "run_python", code="print(x)")).strip() == "41"  # an error keeps state


async def check_files(session: ClientSession) -> None:
    upload = base64.b64encode(b"region,units\nnorth,12\nsouth,30\n").decode()
    saved = await ok(session, "upload_file", name="sales.csv", content_base64=upload)
    assert "/mnt/data/sales.csv" in texts(saved)

    wrote = await ok(session, "run_python", code=(
        "import pandas as pd\n"
        "df = pd.read_csv('/mnt/data/sales.csv')\n"
        "df.assign(double=df.units * 2).to_csv('/mnt/data/out.csv', index=False)\n"
        "open('/mnt/data/blob.bin', 'wb').write(bytes(range(256)))\n"
        "print(df.units.sum())"))
    assert texts(wrote).startswith("42")
    links = {c.uri: c for c in wrote.content if isinstance(c, types.ResourceLink)}
    assert set(links) == {"sandbox:/mnt/data/out.csv", "sandbox:/mnt/data/blob.bin"}
    assert links["sandbox:/mnt/data/blob.bin"].size == 256

    # The client reads a produced file by its link, through resources/read.
    read = await session.read_resource("sandbox:/mnt/data/out.csv")
    [contents] = read.contents
    assert isinstance(contents, types.TextResourceContents)
    assert contents.text == "region,units,double\nnorth,12,24\nsouth,30,60\n"
    listed = {r.uri for r in (await session.list_resources()).resources}
    assert {"sandbox:/mnt/data/out.csv", "sandbox:/mnt/data/sales.csv"} <= listed

    blob = await ok(session, "download_file", path="/mnt/data/blob.bin")
    [embedded] = blob.content
    assert isinstance(embedded, types.EmbeddedResource)
    assert isinstance(embedded.resource, types.BlobResourceContents)
    assert base64.b64decode(embedded.resource.blob) == bytes(range(256))
    text = await ok(session, "download_file", path="out.csv")
    assert isinstance(text.content[0], types.EmbeddedResource)
    assert isinstance(text.content[0].resource, types.TextResourceContents)

    listing = texts(await ok(session, "list_files"))
    for path in ("/mnt/data/sales.csv", "/mnt/data/out.csv", "/mnt/data/blob.bin"):
        assert path in listing


async def check_bad_input(session: ClientSession) -> None:
    cases = [
        (("upload_file",), {"name": "x.csv", "content_base64": "not base64!"}, "base64"),
        (("upload_file",), {"name": "../escape.csv", "content_base64": "eA=="}, "name"),
        (("download_file",), {"path": "/mnt/data/missing.csv"}, "missing.csv"),
        (("download_file",), {"path": "/etc/passwd"}, "/mnt/data"),
        (("run_python",), {"code": "print(1)", "timeout": -1}, "timeout"),
        (("run_python",), {}, "code"),
    ]
    for (name,), arguments, said in cases:
        result = await session.call_tool(name, arguments)
        assert result.is_error, (name, arguments)
        assert said in texts(result).lower() or said in texts(result), (name, arguments, texts(result))
    with pytest.raises(MCPError):
        await session.read_resource("sandbox:/mnt/data/missing.csv")


async def check_restart(session: ClientSession) -> None:
    await ok(session, "run_python", code="kept = 1")
    assert "restarted" in texts(await ok(session, "restart"))
    gone = await call(session, "run_python", code="kept")
    assert gone.is_error and "NameError" in texts(gone)
    assert "/mnt/data/sales.csv" in texts(await ok(session, "list_files"))  # files outlive the kernel


async def exercise(session: ClientSession, *, timeout: str = "60") -> None:
    """The whole contract, in one session: tools, state, images, files, bad input and restart."""
    await check_tools(session, timeout)
    await check_state_image_and_errors(session)
    await check_files(session)
    await check_bad_input(session)
    await check_restart(session)
