"""`syncd run` as systemd runs it: a notify socket bound by the test, pushes, SIGHUP, SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import deployment, topic_stack, write_config
from tests.e2e.conftest import journal_records, run_syncd, running_daemon, syncd_env, wait_for
from tests.support.gitrepo import GitRepo, free_port
from tests.support.timing import PATIENCE


class NotifySocket:
    """The datagram socket systemd would hand the service in $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def wait_for(self, prefix: str, timeout: float = PATIENCE) -> str:
        """Read datagrams until one has an assignment starting with `prefix`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.seen.append(message)
            if any(line.startswith(prefix) for line in message.splitlines()):
                return message
        raise AssertionError(f"no {prefix!r} from the daemon; got {self.seen}")

    def close(self) -> None:
        self.sock.close()


def stack_versions(state: Path) -> dict[str, int]:
    versions: dict[str, int] = {}
    for record in journal_records(state):
        data = record["data"]
        if record["kind"] == "result" and data.get("result") in ("succeeded", "no_changes"):
            versions[data["stack"]] = versions.get(data["stack"], 0) + 1
    return versions


@pytest.fixture
def notify(tmp_path: Path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_the_daemon_under_systemd_applies_pushes_reloads_and_stops(tmp_path, repo, aws, notify):
    topic_stack(repo, "app", "v1")
    second = GitRepo(tmp_path / "second")
    topic_stack(second, "other", "o")
    first_repo = {"name": "r", "url": str(repo.bare), "poll_interval": "200ms"}
    config = write_config(tmp_path, [first_repo], aws.endpoint)
    state = tmp_path / "state"
    env = syncd_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="400000")
    with running_daemon("-c", str(config), env=env) as daemon:
        assert "READY=1" in notify.wait_for("READY=1")
        wait_for(lambda: aws.stack("app"), what="the first create")
        notify.wait_for("WATCHDOG=1")
        # The create shows in moto before the journal has it: an earlier status may say 0.
        notify.wait_for("STATUS=1 stacks")

        # A push is applied by the next poll: version 2 of the stack.
        repo.commit({"deployments/app.yaml": deployment(Name="v2")})
        wait_for(lambda: aws.parameters("app") == {"Name": "v2"}, what="version 2")
        wait_for(lambda: stack_versions(state).get("app") == 2, what="the version 2 record")

        # SIGHUP with a broken config: refused, logged, the daemon keeps going.
        good = config.read_text()
        config.write_text(good + "bogus_key: 1\n")
        daemon.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        assert daemon.poll() is None

        # SIGHUP with a second repo: its stack appears.
        doc = yaml.safe_load(good)
        doc["repos"].append({"name": "second", "url": str(second.bare), "poll_interval": "200ms"})
        config.write_text(yaml.safe_dump(doc))
        daemon.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        wait_for(lambda: aws.stack("other"), what="the new repo's stack")
        # systemd's status line counts stacks as `status` shows them: a suspended one too.
        assert run_syncd("suspend", "app", "-c", str(config)).returncode == 0
        notify.wait_for("STATUS=2 stacks, 1 in sync, 1 suspended")

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        notify.wait_for("STOPPING=1")
    stderr = daemon.stderr_text
    assert "config.reload_refused" in stderr
    assert "bogus_key" in stderr
    assert "daemon.stopped" in stderr


def test_sigterm_while_waiting_on_cloudformation_stops_at_once(tmp_path, repo, aws, notify):
    topic_stack(repo, "slow", "x")
    aws.proxy.slow("slow", polls=100_000)
    config = write_config(tmp_path, [{"name": "r", "url": str(repo.bare)}], aws.endpoint)
    with running_daemon("-c", str(config), env=syncd_env(NOTIFY_SOCKET=str(notify.path))) as daemon:
        notify.wait_for("READY=1")
        wait_for(
            lambda: any(r["kind"] == "executing" for r in journal_records(tmp_path / "state")),
            what="the executing record",
        )
        daemon.send_signal(signal.SIGTERM)  # the create never ends: only stopping at once ends
        assert daemon.wait(timeout=PATIENCE) == 0
    # The apply is still open in the journal: the next start observes it.
    kinds = [r["kind"] for r in journal_records(tmp_path / "state")]
    assert kinds[-1] == "executing"


def test_an_unreachable_repo_backs_off_while_the_others_deploy(tmp_path, repo, aws, notify):
    topic_stack(repo, "fine", "fine")
    port = free_port()
    config = write_config(
        tmp_path,
        [
            {"name": "gone", "url": "git://127.0.0.1:9/nothing.git", "poll_interval": "200ms"},
            {"name": "r", "url": str(repo.bare), "poll_interval": "200ms"},
        ],
        aws.endpoint,
        http={"listen": f"127.0.0.1:{port}"},
    )

    def passes_of_gone() -> float:
        found = re.search(r'syncd_passes_total\{repo="gone"\} (\S+)', http_get(port, "/metrics"))
        return float(found.group(1)) if found else 0.0

    with running_daemon("-c", str(config), env=syncd_env(NOTIFY_SOCKET=str(notify.path))) as daemon:
        notify.wait_for("READY=1")
        wait_for(lambda: aws.stack("fine"), what="the healthy repo's stack")
        wait_for(lambda: passes_of_gone() >= 3, what="gone's third failed fetch")
        records = journal_records(tmp_path / "state")
        errors = [r["data"]["repo"] for r in records if r["kind"] == "source_error"]
        assert errors == ["gone"]  # journaled once, not per retry
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=PATIENCE) == 0


def test_a_watched_repo_is_synced_on_push_without_waiting_for_its_poll(tmp_path, repo, aws, notify):
    topic_stack(repo, "app", "v1")
    watched = {"name": "r", "url": str(repo.bare), "poll_interval": "1h", "watch": True}
    config = write_config(tmp_path, [watched], aws.endpoint)
    env = syncd_env(NOTIFY_SOCKET=str(notify.path))
    with running_daemon("-c", str(config), env=env) as daemon:
        notify.wait_for("READY=1")
        wait_for(lambda: aws.stack("app"), what="the first create")  # the first pass
        for version in ("v2", "v3"):
            repo.commit({"deployments/app.yaml": deployment(Name=version)})
            # The poll would wait an hour: only the watch can bring the change (its speed is
            # bench/watch.py's to measure).
            wait_for(lambda v=version: aws.parameters("app") == {"Name": v}, what=version)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    stderr = daemon.stderr_text
    assert "watch.started" in stderr


def test_webhooks_coalesce_into_a_few_passes_and_forgeries_apply_nothing(
    tmp_path, repo, aws, notify
):
    import hashlib
    import hmac
    import http.client
    import json
    from concurrent.futures import ThreadPoolExecutor

    topic_stack(repo, "app", "v1")
    secret = tmp_path / "hook-secret"
    secret.write_text("a-long-shared-secret\n")
    port = free_port()
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "1h"}
    entry["webhook_secret_file"] = str(secret)
    listen = {"listen": f"127.0.0.1:{port}", "allowed_hosts": ["127.0.0.1"]}
    config = write_config(tmp_path, [entry], aws.endpoint, http=listen)

    def post(body: bytes, key: bytes = b"a-long-shared-secret", path: str = "/hooks/r") -> int:
        digest = hmac.new(key, body, hashlib.sha256).hexdigest()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", path, body, {"X-Hub-Signature-256": f"sha256={digest}"})
        status = conn.getresponse().status
        conn.close()
        return status

    def metric(name: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        lines = [line for line in text.splitlines() if line.startswith(name)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    env = syncd_env(NOTIFY_SOCKET=str(notify.path))
    with running_daemon("-c", str(config), env=env) as daemon:
        notify.wait_for("READY=1")
        wait_for(lambda: aws.stack("app"), what="the first pass")
        wait_for(lambda: metric("syncd_passes_total") >= 1, what="the first pass counted")
        push = json.dumps({"ref": "refs/heads/main"}).encode()

        # Forged, wrong-repo and oversized deliveries: refused, and nothing is applied.
        repo.commit({"deployments/app.yaml": deployment(Name="v2")})
        assert post(push, key=b"guess") == 401
        assert post(push, path="/hooks/elsewhere") == 404
        big = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        big.putrequest("POST", "/hooks/r")
        big.putheader("Content-Length", str(1024 * 1024 + 1))
        big.endheaders()  # the answer comes before any of the body is sent
        assert big.getresponse().status == 413
        big.close()
        # A page under another name (DNS rebinding) is refused by http.allowed_hosts.
        rebound = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        rebound.request("GET", "/healthz", headers={"Host": "evil.example"})
        assert rebound.getresponse().status == 421
        rebound.close()
        time.sleep(1.0)
        assert aws.parameters("app") == {"Name": "v1"}
        assert metric("syncd_http_refused_total") >= 1

        before = metric("syncd_passes_total")
        with ThreadPoolExecutor(max_workers=10) as pool:
            codes = list(pool.map(lambda _: post(push), range(100)))
        assert set(codes) <= {202, 429} and codes.count(202) >= 20
        wait_for(lambda: aws.parameters("app") == {"Name": "v2"}, what="version 2")
        # A pass is counted once it has ended, after moto shows v2; then any passes still
        # queued by the 100 deliveries have a second to show.
        wait_for(lambda: metric("syncd_passes_total") > before, what="version 2's pass counted")
        time.sleep(1.0)
        passes = metric("syncd_passes_total") - before
        assert passes <= 10, passes  # a handful, not a hundred
        assert 'state="in_sync"' in http_get(port, "/metrics")
        assert metric("syncd_aws_call_rate") > 0  # the call budget, as it stands
        assert metric("syncd_cloudformation_looks_total") >= 1  # v2's wait was a shared look
        assert http_get(port, "/readyz") == "ready\n"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    stderr = daemon.stderr_text
    assert "a-long-shared-secret" not in stderr
    assert '"code": 401' in stderr


def http_get(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def test_approve_executes_the_waiting_change_set_with_or_without_a_daemon(
    tmp_path, repo, aws, notify
):
    from tests.e2e.conftest import json_out, run_syncd

    topic_stack(repo, "app", "v1")
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "1h", "approval": "manual"}
    config = write_config(tmp_path, [entry], aws.endpoint)

    # No daemon: `sync` stops at the change set; `approve` answers its own request.
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    status = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
    assert [(r["stack"], r["state"]) for r in status] == [("app", "awaiting_approval")]
    wrong = run_syncd("approve", "app", "--change-set", "syncd-v9-0000", "-c", str(config))
    assert wrong.returncode == 1 and "is not the change set waiting" in wrong.stderr
    assert aws.proxy.count("ExecuteChangeSet") == 0
    done = run_syncd("approve", "app", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "app: succeeded"
    assert aws.stack("app")["StackStatus"] == "CREATE_COMPLETE"

    # A daemon: the next version waits; `approve` hands the request over and follows it.
    env = syncd_env(NOTIFY_SOCKET=str(notify.path))
    with running_daemon("-c", str(config), env=env) as daemon:
        notify.wait_for("READY=1")
        repo.commit({"deployments/app.yaml": deployment(Name="v2")})
        daemon.send_signal(signal.SIGHUP)  # a quick way to have it look (it polls hourly)
        notify.wait_for("READY=1")

        def waiting() -> bool:
            rows = json_out(run_syncd("status", "-c", str(config), "--format", "json"))
            return rows[0]["state"] == "awaiting_approval"

        wait_for(waiting, what="version 2 waiting for approval")
        done = run_syncd("approve", "app", "-c", str(config))  # SIGUSR1: the poll is hourly
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "app: succeeded"
        assert aws.parameters("app") == {"Name": "v2"}
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    stderr = daemon.stderr_text
    assert "approval.accepted" in stderr
    history = json_out(run_syncd("history", "-c", str(config), "--format", "json"))
    assert [(h["version"], h["result"]) for h in history] == [(1, "succeeded"), (2, "succeeded")]


def test_approve_takes_a_stack_name_without_its_repos_prefix(tmp_path, repo, aws):
    topic_stack(repo, "app", "v1")
    entry = {"name": "r", "url": str(repo.bare), "approval": "manual", "stack_prefix": "team-"}
    config = write_config(tmp_path, [entry], aws.endpoint)
    assert run_syncd("sync", "-c", str(config)).returncode == 0
    unknown = run_syncd("approve", "nope", "-c", str(config))
    assert unknown.returncode == 2 and "no stack 'nope' in the journal" in unknown.stderr
    done = run_syncd("approve", "app", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "team-app: succeeded"
