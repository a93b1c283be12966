"""The API key never reaches the database, the logs, --json output or any file batchctl writes."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchctl.emulator import Emulator, EmulatorSettings
from batchctl.jobs.secrets import Masker, secret_values
from batchctl.store import open_store
from tests.conftest import Workspace, run_exe

SECRET = f"sk-secret-{uuid.uuid4().hex}"


def _requests(path: Path, count: int) -> Path:
    with path.open("w") as handle:
        for i in range(count):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}
            line = {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            handle.write(json.dumps(line) + "\n")
    return path


def _everything_written(ws: Workspace) -> list[Path]:
    return [p for p in ws.root.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_api_key_never_appears_in_outputs_database_or_files(
    ws: Workspace, batchctl_exe: str
) -> None:
    ws.write_config(
        "[openai]\npoll_interval = 0.05\n"
        '[jobs.local]\nkind = "command"\ncommand = "echo working"\n'
        '[jobs.batch]\nkind = "openai"\ninput = "requests.jsonl"\n'
    )
    _requests(ws.root / "requests.jsonl", 20)
    _requests(ws.root / "more.jsonl", 7)
    outputs: list[str] = []
    with Emulator() as emulator:
        env = {**ws.env(), "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": emulator.base_url}
        commands = [
            ["run", "local", "--json"],
            ["run", "batch", "--wait", "--json"],
            ["submit", "more.jsonl", "--dry-run", "--json"],
            ["submit", "more.jsonl", "--json"],
            ["wait", "3", "--json"],
            ["results", "3", "-o", "answers.jsonl", "--errors", "errors.jsonl", "--json"],
            ["results", "3", "-o", "answers.csv", "--format", "csv"],
            ["status", "--json"],
            ["status", "3", "--json"],
            ["status", "--remote", "--json"],
            ["logs", "1", "--json"],
            ["jobs", "--json"],
            ["retry", "3", "--json"],
            ["--verbose", "status", "999"],
            ["daemon", "--once"],
            ["config", "check", "--json"],
        ]
        for args in commands:
            result = run_exe(batchctl_exe, *args, env=env)
            outputs += [result.stdout, result.stderr]
    with Emulator(EmulatorSettings(api_key="another-key")) as strict:
        env = {**ws.env(), "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": strict.base_url}
        failed = run_exe(batchctl_exe, "--verbose", "submit", "more.jsonl", "--force", env=env)
        assert failed.returncode == 1  # a 401: the error is shown, the key is not
        outputs += [failed.stdout, failed.stderr]
    assert all(SECRET not in text for text in outputs)
    assert len((ws.root / "answers.jsonl").read_text().splitlines()) == 7  # the commands worked
    written = _everything_written(ws)
    assert any(p.suffix == ".db" for p in written)
    assert any("-files" in str(p) for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path


# --- secrets a job can see are masked in what batchctl records from it --------------------------

ANTHROPIC = f"sk-ant-{uuid.uuid4().hex}"
SERVICE_TOKEN = f"tok-{uuid.uuid4().hex}"
DB_PASSWORD = f"pw{uuid.uuid4().hex[:10]}"


def _database_text(ws: Workspace) -> bytes:
    """Every byte batchctl keeps in its database directory (the file, its -wal and -shm)."""
    return b"".join(p.read_bytes() for p in ws.root.glob("batchctl.db*") if p.is_file())


@pytest.mark.slow
def test_a_command_job_that_prints_its_environment_records_the_secrets_masked(
    ws: Workspace, batchctl_exe: str
) -> None:
    ws.write_config(
        '[jobs.printenv]\nkind = "command"\n'
        'command = "env; printf %s \\"$OPENAI_API_KEY\\" > seen.txt"\n'
    )
    # Only the secrets this test names: an ambient one (the PostgreSQL test server's URL, whose
    # password may be a word like "postgres") would mask parts of the lines asserted on.
    env = {
        **{k: v for k, v in ws.env().items() if k != "BATCHCTL_TEST_PG"},
        "OPENAI_API_KEY": SECRET,
        "ANTHROPIC_API_KEY": ANTHROPIC,
        "DEPLOY_SERVICE_TOKEN": SERVICE_TOKEN,
        "REPORTS_DATABASE_URL": f"postgresql://reports:{DB_PASSWORD}@db.example/reports",
        "PLAIN_SHORT_KEY": "abc",  # too short to be a secret: masking it would mask words
    }
    ran = run_exe(batchctl_exe, "run", "printenv", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    logs = run_exe(batchctl_exe, "logs", "1", env=env).stdout
    assert "OPENAI_API_KEY=***" in logs
    assert "ANTHROPIC_API_KEY=***" in logs
    assert "DEPLOY_SERVICE_TOKEN=***" in logs
    assert "REPORTS_DATABASE_URL=postgresql://reports:***@db.example/reports" in logs
    assert "PLAIN_SHORT_KEY=abc" in logs
    for secret in (SECRET, ANTHROPIC, SERVICE_TOKEN, DB_PASSWORD):
        assert secret not in logs + ran.stdout + ran.stderr
        assert secret.encode() not in _database_text(ws)
    # The job itself still got the key.
    assert (ws.root / "seen.txt").read_text() == SECRET


def test_a_python_job_that_logs_and_raises_a_secret_records_it_masked(
    ws: Workspace, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ws.write_module(
        "leaky",
        """
        import os

        def process(ctx):
            key = os.environ["OPENAI_API_KEY"]
            ctx.log("info", f"using {key}", key=key, nested={"keys": [key]})
            raise ValueError(f"the server refused {key}")
        """,
    )
    ws.write_config('[jobs.leaky]\nkind = "python"\nprocessor = "leaky:process"\n')
    ran = cli("run", "leaky", "--json")
    assert ran.exit_code == 1
    status = cli("status", "1", "--json")
    logs = cli("logs", "1", "--json")
    assert "ValueError: the server refused ***" in status.stdout
    assert "using ***" in logs.stdout
    for text in (ran.stdout, ran.stderr, status.stdout, logs.stdout):
        assert SECRET not in text
    assert SECRET.encode() not in _database_text(ws)


def test_a_job_env_secret_from_the_config_is_masked_too(ws: Workspace, cli: Any) -> None:
    ws.write_config(
        f'[jobs.show]\nkind = "command"\ncommand = "echo token=$WEBHOOK_TOKEN"\n'
        f'env = {{ WEBHOOK_TOKEN = "{SERVICE_TOKEN}" }}\n'
    )
    assert cli("run", "show").exit_code == 0
    assert "token=***" in cli("logs", "1").stdout
    assert SERVICE_TOKEN.encode() not in _database_text(ws)


def test_which_values_are_secret() -> None:
    found = secret_values(
        {
            "OPENAI_API_KEY": "sk-1234",
            "MY_API_KEY": "12345678",
            "GITHUB_TOKEN": "1234567",  # 7 characters: not masked
            "APP_SECRET": "s3cr3t-value",
            "SMTP_PASSWORD": "hunter2hunter2",
            "CUSTOM_KEY_NAME": "not-a-secret-name",
            "HOME": "/home/someone",
            "DATABASE_URL": "postgresql://u:p%40ssword@host/db?sslmode=require",
            "OTHER_URL": "postgresql://host/db?password=querypass",
        },
        named=("MY_PROVIDER_KEY_VAR",),
    )
    assert found == {
        "sk-1234",
        "12345678",
        "s3cr3t-value",
        "hunter2hunter2",
        "p%40ssword",
        "p@ssword",
        "querypass",
    }
    assert secret_values({"MY_PROVIDER_KEY_VAR": "abcd"}, named=("MY_PROVIDER_KEY_VAR",)) == {
        "abcd"
    }
    masker = Masker(["abc", "abcdef"])
    assert masker.text("xabcdefx abc") == "x***x ***"  # the longest first


# --- what batchctl creates is private to the user -----------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The common umask 022, under which plain creation gives 0644 files and 0755 directories."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_the_database_and_its_directory_are_created_private(
    ws: Workspace, cli: Any, monkeypatch: pytest.MonkeyPatch, usual_umask: None
) -> None:
    monkeypatch.delenv("BATCHCTL_DB")  # the default place, under $XDG_DATA_HOME
    ws.write_config('[jobs.hi]\nkind = "command"\ncommand = "echo hi"\n')
    assert cli("run", "hi").exit_code == 0
    data = Path(os.environ["XDG_DATA_HOME"])
    database = data / "batchctl" / "batchctl.db"
    assert _mode(data) == 0o700 and _mode(database.parent) == 0o700
    assert _mode(database) == 0o600
    store = open_store(str(database))  # a connection open keeps the -wal and -shm files
    try:
        store.conn.execute("SELECT count(*) FROM runs").fetchall()
        for suffix in ("-wal", "-shm"):
            assert _mode(database.with_name(database.name + suffix)) == 0o600
    finally:
        store.close()


def test_existing_database_and_directory_modes_are_left_alone(
    ws: Workspace, cli: Any, usual_umask: None
) -> None:
    ws.root.chmod(0o755)
    ws.db.touch(mode=0o640)
    ws.db.chmod(0o640)
    ws.write_config('[jobs.hi]\nkind = "command"\ncommand = "echo hi"\n')
    assert cli("run", "hi").exit_code == 0
    assert (_mode(ws.root), _mode(ws.db)) == (0o755, 0o640)


@pytest.mark.slow
def test_submission_files_directories_are_created_private(ws: Workspace, batchctl_exe: str) -> None:
    ws.write_config("[openai]\npoll_interval = 0.05\n")
    _requests(ws.root / "requests.jsonl", 3)
    with Emulator() as emulator:
        env = {**ws.env(), "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": emulator.base_url}
        submitted = run_exe(batchctl_exe, "submit", "requests.jsonl", "--wait", env=env)
    assert submitted.returncode == 0, submitted.stderr
    files = ws.root / "batchctl-files"
    directories = [files, *(p for p in files.rglob("*") if p.is_dir())]
    assert len(directories) >= 2  # the root and the submission's own
    assert all(_mode(d) == 0o700 for d in directories), [oct(_mode(d)) for d in directories]
    assert _mode(ws.db) == 0o600
