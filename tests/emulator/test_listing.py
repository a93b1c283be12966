"""Listing, retrieving and deleting files and batches; 404s."""

from __future__ import annotations

import openai
import pytest
from emulator_helpers import chat_line, jsonl, run_to_end, start_batch, upload

from batchctl.emulator import Emulator


def test_batches_list_is_newest_first_across_pages(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    uploaded = upload(client, jsonl([chat_line("a")]))
    created = []
    for _ in range(7):
        created.append(
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            ).id
        )
    emulator.advance(1)

    page = client.batches.list(limit=3)
    assert [b.id for b in page.data] == created[::-1][:3]
    assert page.has_more is True
    listed = [b.id for b in client.batches.list(limit=3)]  # auto-paginates
    assert listed == created[::-1]
    pages = [r for r in emulator.requests if r.path == "/v1/batches" and r.method == "GET"]
    assert [r.query.split("after=")[-1] for r in pages[2:]] == [created[4], created[1]]


def test_batches_list_page_has_cursor_fields(emulator: Emulator, client: openai.OpenAI) -> None:
    batch = start_batch(client, [chat_line("a")])
    page = client.batches.list()
    assert page.model_dump()["first_id"] == batch.id
    assert page.model_dump()["last_id"] == batch.id
    assert page.has_more is False


def test_batches_list_pages_hold_20_by_default_and_at_most_100(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    uploaded = upload(client, jsonl([chat_line("a")]))
    for _ in range(101):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )

    assert len(client.batches.list().data) == 20
    full = client.batches.list(limit=100)
    assert len(full.data) == 100 and full.has_more is True
    last = client.batches.list(limit=100, after=full.data[-1].id)
    assert len(last.data) == 1 and last.has_more is False
    assert last.model_dump()["first_id"] == last.model_dump()["last_id"] == last.data[0].id
    for limit in (0, 101):
        with pytest.raises(openai.BadRequestError) as caught:
            client.batches.list(limit=limit)
        assert caught.value.code == "invalid_value"


def test_batches_list_shows_each_batch_as_a_get_does(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    running = start_batch(client, [chat_line("a"), chat_line("b")])
    finished = run_to_end(emulator, client, start_batch(client, [chat_line("c")]).id)
    waiting = start_batch(client, [chat_line("d")])
    emulator.advance(0.5)  # time moves: the list reports each batch as of now, as a GET does

    listed = {b.id: b for b in client.batches.list(limit=100)}

    assert list(listed) == [waiting.id, finished.id, running.id]
    for batch_id, batch in listed.items():
        assert batch == client.batches.retrieve(batch_id)


def test_an_empty_batches_list(emulator: Emulator, client: openai.OpenAI) -> None:
    page = client.batches.list(limit=100)
    assert page.data == []
    assert page.has_more is False
    dumped = page.model_dump()
    assert (dumped["object"], dumped["first_id"], dumped["last_id"]) == ("list", None, None)


def test_files_list_filters_by_purpose_and_orders(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    a = upload(client, b'{"a": 1}\n', "a.jsonl")
    b = client.files.create(file=("b.txt", b"hello"), purpose="user_data")
    c = upload(client, b'{"c": 1}\n', "c.jsonl")

    assert [f.id for f in client.files.list()] == [c.id, b.id, a.id]
    assert [f.id for f in client.files.list(order="asc")] == [a.id, b.id, c.id]
    assert [f.id for f in client.files.list(purpose="batch")] == [c.id, a.id]
    assert [f.id for f in client.files.list(limit=1)] == [c.id, b.id, a.id]


def test_file_object_fields(emulator: Emulator, client: openai.OpenAI) -> None:
    data = jsonl([chat_line("a")])
    uploaded = upload(client, data, "my input.jsonl")
    again = client.files.retrieve(uploaded.id)

    assert again == uploaded
    assert uploaded.id.startswith("file-")
    assert uploaded.object == "file"
    assert uploaded.bytes == len(data)
    assert uploaded.filename == "my input.jsonl"
    assert uploaded.purpose == "batch"
    assert uploaded.status == "processed"
    assert uploaded.expires_at == uploaded.created_at + 30 * 86_400
    assert client.files.content(uploaded.id).content == data


def test_output_file_has_purpose_batch_output(emulator: Emulator, client: openai.OpenAI) -> None:
    batch = run_to_end(emulator, client, start_batch(client, [chat_line("a")]).id)
    assert batch.output_file_id is not None
    output = client.files.retrieve(batch.output_file_id)
    assert output.purpose == "batch_output"
    assert [f.id for f in client.files.list(purpose="batch_output")] == [output.id]


def test_deleted_file_is_gone(emulator: Emulator, client: openai.OpenAI) -> None:
    uploaded = upload(client, jsonl([chat_line("a")]))
    deleted = client.files.delete(uploaded.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert client.files.list().data == []


def test_file_with_expires_after_disappears(emulator: Emulator, client: openai.OpenAI) -> None:
    uploaded = client.files.create(
        file=("a.jsonl", b"{}\n"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert uploaded.expires_at == uploaded.created_at + 3600
    emulator.advance(3601)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_unknown_file_id_is_404(emulator: Emulator, client: openai.OpenAI) -> None:
    for call in (
        client.files.retrieve,
        client.files.content,
        client.files.delete,
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call("file-missing")
        assert caught.value.body == {
            "message": "No such File object: file-missing",
            "type": "invalid_request_error",
            "param": "id",
            "code": None,
        }


def test_unknown_batch_id_is_404(emulator: Emulator, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_missing")


def test_unknown_path_is_404(emulator: Emulator, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.get("/nothing/here", cast_to=object)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "Invalid URL (GET /v1/nothing/here)"


def test_deleting_input_while_validating_keeps_batch_working(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    batch = start_batch(client, [chat_line("a")])
    client.files.delete(batch.input_file_id)
    assert run_to_end(emulator, client, batch.id).status == "completed"
