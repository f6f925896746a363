"""The Files and Containers APIs through the official openai SDK and plain HTTP, against a live server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import openai
import pytest
from gateway_support import ServerProcess, assert_openai_error, labelled_containers

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0, timeout=120) as sdk:
        yield sdk


def all_file_ids(http: httpx.Client) -> list[str]:
    """Every file id of the (single, local) owner, oldest first."""
    body = http.get("/v1/files", params={"order": "asc"}).json()
    assert body["has_more"] is False
    return [f["id"] for f in body["data"]]


# -- operations ---------------------------------------------------------------------------


def test_healthz_reports_docker_and_the_image(http: httpx.Client) -> None:
    response = http.get("/healthz")

    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["docker"] is True
    assert report["image"]["present"] is True
    assert report["image"]["name"].startswith("codeinterp-kernel:")


def test_metrics_count_requests(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200

    response = http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE codeinterp_requests_total counter" in text
    assert 'codeinterp_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "codeinterp_sessions " in text


# -- Files API through the SDK --------------------------------------------------------------


def test_sdk_file_lifecycle(client: openai.OpenAI, http: httpx.Client) -> None:
    payload = os.urandom(4096) + b"\x00\xff end"

    created = client.files.create(file=("blob.bin", payload), purpose="assistants")

    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(payload)
    assert created.filename == "blob.bin"
    assert created.purpose == "assistants"
    assert created.status == "processed"
    retrieved = client.files.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()
    assert client.files.content(created.id).content == payload

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError) as raised:
        client.files.retrieve(created.id)
    assert raised.value.status_code == 404
    assert created.id not in all_file_ids(http)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_sdk_file_list_pages_with_limit_and_after(client: openai.OpenAI, http: httpx.Client) -> None:
    made = [client.files.create(file=(f"page-{i}.txt", f"file {i}\n".encode()), purpose="assistants").id
            for i in range(3)]
    older = all_file_ids(http)[:-3]  # files other tests of this module made before

    page = client.files.list(limit=2)  # newest first
    assert [f.id for f in page.data] == [made[2], made[1]]
    assert page.has_more is True
    raw = http.get("/v1/files", params={"limit": 2}).json()
    assert raw["object"] == "list"
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (made[2], made[1], True)

    rest = http.get("/v1/files", params={"limit": 1, "after": made[1]}).json()
    assert [f["id"] for f in rest["data"]] == [made[0]]
    assert (rest["first_id"], rest["last_id"], rest["has_more"]) == (made[0], made[0], bool(older))

    ascending = client.files.list(order="asc", after=made[0], limit=10)
    assert [f.id for f in ascending.data] == made[1:]
    assert ascending.has_more is False
    # The SDK's auto-pagination follows `after` through every page.
    assert [f.id for f in client.files.list(limit=1)][:3] == made[::-1]

    vision_only = client.files.list(purpose="vision")
    assert vision_only.data == []
    for file_id in made:
        client.files.delete(file_id)


def test_file_content_headers(http: httpx.Client) -> None:
    data = b"region,units\nnorth,3\n"
    created = http.post("/v1/files", files={"file": ("sales.csv", data, "text/csv")},
                        data={"purpose": "assistants"})
    assert created.status_code == 200, created.text

    response = http.get(f"/v1/files/{created.json()['id']}/content")

    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"].split(";")[0].strip() == "text/csv"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="sales.csv"' in disposition
    assert response.headers["x-content-type-options"] == "nosniff"


def test_content_disposition_of_an_unusual_name_is_safe(http: httpx.Client) -> None:
    name = "r\u00e9sum\u00e9 final;.txt"
    created = http.post("/v1/files", files={"file": (name, b"hello", "text/plain")},
                        data={"purpose": "assistants"})
    assert created.status_code == 200, created.text
    assert created.json()["filename"] == name

    response = http.get(f"/v1/files/{created.json()['id']}/content")

    disposition = response.headers["content-disposition"]
    assert disposition.isascii()
    assert 'filename="r_sum_ final_.txt"' in disposition
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20final%3B.txt" in disposition
    assert response.headers["content-type"].startswith("text/plain")


# -- Containers API through the SDK ------------------------------------------------------------


def test_sdk_container_lifecycle_with_files(client: openai.OpenAI, http: httpx.Client,
                                            server: ServerProcess) -> None:
    seeded = os.urandom(1500)
    by_id = b"added later by file_id\n"
    uploaded = os.urandom(2048)
    seed = client.files.create(file=("seed.bin", seeded), purpose="assistants")
    later = client.files.create(file=("later.txt", by_id), purpose="assistants")

    container = client.containers.create(name="sdk box", file_ids=[seed.id])
    try:
        assert container.id.startswith("cntr_")
        assert (container.object, container.name, container.status) == ("container", "sdk box", "running")
        assert container.memory_limit == "1g"
        assert container.expires_after is not None and container.expires_after.anchor == "last_active_at"
        assert container.expires_after.minutes == 20
        docker_side = labelled_containers(f"codeinterp.container={container.id}", *server.labels)
        assert len(docker_side) == 1 and docker_side[0].status == "running"

        retrieved = client.containers.retrieve(container.id)
        assert (retrieved.id, retrieved.name, retrieved.status) == (container.id, "sdk box", "running")
        assert retrieved.last_active_at is not None and retrieved.last_active_at >= container.created_at
        assert container.id in [c.id for c in client.containers.list()]

        files = client.containers.files.list(container.id)
        assert [(f.path, f.bytes, f.source) for f in files.data] == [("/mnt/data/seed.bin", len(seeded), "user")]
        seed_cfile = files.data[0]
        assert seed_cfile.container_id == container.id
        assert client.containers.files.content.retrieve(seed_cfile.id, container_id=container.id).content \
            == seeded

        created = client.containers.files.create(container.id, file=("upload.bin", uploaded))
        assert created.id.startswith("cfile_")
        assert (created.object, created.path, created.bytes, created.source) == (
            "container.file", "/mnt/data/upload.bin", len(uploaded), "user")
        assert client.containers.files.retrieve(created.id, container_id=container.id).path \
            == "/mnt/data/upload.bin"
        assert client.containers.files.content.retrieve(created.id, container_id=container.id).content \
            == uploaded

        # The same endpoint takes JSON {"file_id": ...} for a file already in the Files API.
        by_ref = http.post(f"/v1/containers/{container.id}/files", json={"file_id": later.id})
        assert by_ref.status_code == 200, by_ref.text
        ref = by_ref.json()
        assert ref["object"] == "container.file"
        assert (ref["path"], ref["bytes"], ref["source"], ref["container_id"]) == (
            "/mnt/data/later.txt", len(by_id), "user", container.id)
        content = http.get(f"/v1/containers/{container.id}/files/{ref['id']}/content")
        assert content.status_code == 200
        assert content.content == by_id
        assert content.headers["content-type"].startswith("text/plain")

        ascending = [f.path for f in client.containers.files.list(container.id, order="asc").data]
        descending = [f.path for f in client.containers.files.list(container.id, order="desc").data]
        assert sorted(ascending) == ["/mnt/data/later.txt", "/mnt/data/seed.bin", "/mnt/data/upload.bin"]
        assert descending == ascending[::-1]

        client.containers.files.delete(created.id, container_id=container.id)
        assert sorted(f.path for f in client.containers.files.list(container.id).data) == [
            "/mnt/data/later.txt", "/mnt/data/seed.bin"]
        with pytest.raises(openai.NotFoundError):
            client.containers.files.retrieve(created.id, container_id=container.id)
    finally:
        client.containers.delete(container.id)

    with pytest.raises(openai.NotFoundError):
        client.containers.retrieve(container.id)
    assert container.id not in [c.id for c in client.containers.list()]
    assert labelled_containers(f"codeinterp.container={container.id}") == []
    with pytest.raises(openai.NotFoundError):
        client.containers.delete(container.id)
    # The files it was made from stay in the Files API.
    assert client.files.content(seed.id).content == seeded


def test_container_list_pages(client: openai.OpenAI, http: httpx.Client) -> None:
    ids = [client.containers.create(name=f"page {i}").id for i in range(2)]
    try:
        newest = http.get("/v1/containers", params={"limit": 1}).json()
        assert [c["id"] for c in newest["data"]] == [ids[1]]
        assert (newest["first_id"], newest["last_id"], newest["has_more"]) == (ids[1], ids[1], True)
        after = http.get("/v1/containers", params={"limit": 1, "after": ids[1]}).json()
        assert [c["id"] for c in after["data"]] == [ids[0]]
        assert [c.id for c in client.containers.list(order="asc", after=ids[0]).data] == [ids[1]]
        deleted = http.delete(f"/v1/containers/{ids[0]}")
        assert deleted.json() == {"id": ids[0], "object": "container.deleted", "deleted": True}
    finally:
        for container_id in ids:
            http.delete(f"/v1/containers/{container_id}")
    assert not {c["id"] for c in http.get("/v1/containers").json()["data"]} & set(ids)


def test_container_file_by_unknown_file_id_is_404(http: httpx.Client) -> None:
    created = http.post("/v1/containers", json={"name": "empty"})
    assert created.status_code == 200, created.text
    container_id = created.json()["id"]
    try:
        assert_openai_error(http.post(f"/v1/containers/{container_id}/files", json={"file_id": "file-nope"}),
                            404)
        assert_openai_error(http.post(f"/v1/containers/{container_id}/files", json={"nope": 1}), 400)
        assert_openai_error(http.post(f"/v1/containers/{container_id}/files", content=b"raw",
                                      headers={"content-type": "text/plain"}), 400)
        assert_openai_error(http.post(f"/v1/containers/{container_id}/files",
                                      files={"other": ("x.txt", b"x")}), 400, param="file")
        assert_openai_error(http.post(f"/v1/containers/{container_id}/files",
                                      files={"file": ("../x.txt", b"x")}), 400, param="file")
        assert_openai_error(http.get(f"/v1/containers/{container_id}/files/cfile_nope"), 404)
        assert_openai_error(http.get(f"/v1/containers/{container_id}/files/cfile_nope/content"), 404)
        assert http.get(f"/v1/containers/{container_id}/files").json()["data"] == []
    finally:
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200


def test_memory_limit_is_enforced_on_the_docker_container(client: openai.OpenAI, server: ServerProcess) -> None:
    container = client.containers.create(name="big", memory_limit="4g")
    try:
        (docker_side,) = labelled_containers(f"codeinterp.container={container.id}", *server.labels)
        host_config = docker_side.attrs["HostConfig"]
        assert host_config["Memory"] == 4 * 1024**3
        assert host_config["MemorySwap"] == 4 * 1024**3  # no swap on top
        assert host_config["NetworkMode"] == "none"
        assert host_config["ReadonlyRootfs"] is True
        assert host_config["CapDrop"] == ["ALL"]
    finally:
        client.containers.delete(container.id)
