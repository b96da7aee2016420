"""syncd.core.config: the config file (docs/configuration.md) parsed from text, with no disk or
network."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from syncd.core.config import (
    DEFAULT_CAPABILITIES,
    Approval,
    AwsConfig,
    BackupConfig,
    Config,
    HttpConfig,
    OnFailure,
    RepoConfig,
    StackOptions,
    parse_config,
    parse_duration,
)
from syncd.core.targets import Target
from syncd.errors import ConfigError

BASE = Path("/etc/syncd")
SOURCE = "/etc/syncd/syncd.yaml"
REMOTE = "https://git.example.com/platform/templates.git"


def parse(text: str, base_dir: Path = BASE) -> Config:
    return parse_config(textwrap.dedent(text), SOURCE, base_dir)


def problems(text: str, base_dir: Path = BASE) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    assert info.value.source == SOURCE
    return info.value.problems


def problem_for(found: list[str], key_path: str) -> str:
    """The one problem reported for `key_path` (its text after 'key.path: ')."""
    matching = [p for p in found if p.startswith(f"{key_path}: ")]
    assert len(matching) == 1, f"expected one problem for {key_path!r} in {found}"
    return matching[0][len(key_path) + 2 :]


def minimal(extra_repo: str = "", extra_top: str = "") -> str:
    repo = textwrap.indent(textwrap.dedent(extra_repo), "    ")
    return (
        "state_dir: /var/lib/syncd\n"
        + textwrap.dedent(extra_top)
        + "repos:\n"
        + "  - name: platform\n"
        + f"    url: {REMOTE}\n"
        + repo
    )


# --- defaults ------------------------------------------------------------------------------


def test_minimal_config_gets_every_default() -> None:
    config = parse(minimal())

    assert config.source == SOURCE
    assert config.state_dir == Path("/var/lib/syncd")
    assert config.aws == AwsConfig()
    assert config.aws.region is None
    assert config.aws.embedded is False
    assert config.aws.wait_poll == 5.0
    assert config.backup == BackupConfig(url=None, interval=5.0, sse=None, kms_key_id=None)
    assert config.http == HttpConfig(listen=None)
    assert config.defaults == StackOptions(
        capabilities=DEFAULT_CAPABILITIES,
        approval=Approval.AUTO,
        on_failure=OnFailure.KEEP,
        prune=False,
    )
    assert config.concurrency == 50
    assert config.repos == (
        RepoConfig(
            name="platform",
            url=REMOTE,
            branch="main",
            poll_interval=60.0,
            watch=False,
            webhook_secret_file=None,
            deployments=("deployments/*.yaml",),
            stack_prefix="",
            options=StackOptions(),
            stack_options={},
            init_from=None,
        ),
    )


def test_nothing_is_acknowledged_by_default() -> None:
    # A template that creates IAM resources is applied only where the config allows it.
    assert DEFAULT_CAPABILITIES == ()
    assert StackOptions().capabilities == ()


def test_spec_example_parses() -> None:
    # The example of docs/configuration.md, nulls and all.
    config = parse(
        """
        state_dir: /var/lib/syncd
        aws:
          region: us-east-1
          profile: null
          endpoint_url: null
          embedded: false
          role_arn: null
        backup:
          url: s3://acme-syncd/prod/
          interval: 5s
          sse: aws:kms
          kms_key_id: null
        http:
          listen: 127.0.0.1:9790
        defaults:
          capabilities: [CAPABILITY_IAM, CAPABILITY_NAMED_IAM, CAPABILITY_AUTO_EXPAND]
          approval: auto
          on_failure: keep
          prune: false
        concurrency: 4
        repos:
          - name: platform
            url: https://git.example.com/platform/templates.git
            branch: main
            poll_interval: 60s
            watch: false
            webhook_secret_file: null
            deployments: ["deployments/*.yaml"]
            stack_prefix: ""
            approval: manual
            stacks:
              network: {prune: false, on_failure: retry}
        """
    )

    assert config.aws.region == "us-east-1"
    assert config.aws.profile is None
    assert config.backup.url == "s3://acme-syncd/prod/"
    assert config.backup.sse == "aws:kms"
    assert config.http.listen == "127.0.0.1:9790"
    repo = config.repo("platform")
    assert repo.options.approval is Approval.MANUAL
    assert repo.options_for("network") == StackOptions(
        capabilities=("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"),
        approval=Approval.MANUAL,
        on_failure=OnFailure.RETRY,
        prune=False,
        target=Target(region="us-east-1"),
    )
    assert repo.options_for("app").on_failure is OnFailure.KEEP


def test_repo_lookup_by_name() -> None:
    config = parse(minimal())
    assert config.repo("platform").url == REMOTE
    with pytest.raises(KeyError):
        config.repo("nope")


def test_explicit_values_override_defaults() -> None:
    config = parse(
        minimal(
            extra_top="""
            aws:
              region: eu-west-1
              profile: ops
              endpoint_url: http://127.0.0.1:5000
              embedded: true
              role_arn: arn:aws:iam::123456789012:role/syncd
              template_bucket: s3://acme-templates/syncd/
              wait_poll: 500ms
            concurrency: 8
            """,
            extra_repo="""
            branch: release/2025
            poll_interval: 5m
            deployments: ["stacks/**/*.yaml", "extra/*.yml"]
            stack_prefix: prod-
            """,
        )
    )

    assert config.aws == AwsConfig(
        region="eu-west-1",
        profile="ops",
        endpoint_url="http://127.0.0.1:5000",
        embedded=True,
        role_arn="arn:aws:iam::123456789012:role/syncd",
        template_bucket="s3://acme-templates/syncd/",
        wait_poll=0.5,
    )
    assert config.concurrency == 8
    repo = config.repos[0]
    assert repo.branch == "release/2025"
    assert repo.poll_interval == 300.0
    assert repo.deployments == ("stacks/**/*.yaml", "extra/*.yml")
    assert repo.stack_prefix == "prod-"


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 10s ", 10.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["30", "0.5", "", "s", "5 m", "5 minutes", "1d", "-5s", "5S", "1h30m", "soon"]
)
def test_parse_duration_refuses_bare_numbers_and_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration like 500ms, 30s, 5m or 1h"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("key_path", "yaml_value", "needle"),
    [
        ("repos[0].poll_interval", "30", "must be a duration"),
        ("repos[0].poll_interval", "1.5", "must be a duration"),
        ("repos[0].poll_interval", "thirty", "is not a duration"),
        ("repos[0].poll_interval", "0s", "longer than zero"),
        ("backup.interval", "often", "is not a duration"),
        ("backup.interval", "5", "must be a duration"),
        ("aws.wait_poll", "2", "must be a duration"),
    ],
)
def test_bad_durations_in_config_are_reported_with_key_path(
    key_path: str, yaml_value: str, needle: str
) -> None:
    section, key = key_path.rsplit(".", 1)
    if section == "repos[0]":
        text = minimal(extra_repo=f"{key}: {yaml_value}\n")
    else:
        text = minimal(extra_top=f"{section}:\n  {key}: {yaml_value}\n")
    assert needle in problem_for(problems(text), key_path)


# --- relative paths and URLs ---------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = parse(
        """
        state_dir: state
        repos:
          - name: local
            url: repos/templates
            init_from: ../seed
            webhook_secret_file: secrets/hook
        """,
        base_dir=tmp_path,
    )

    assert config.state_dir == tmp_path / "state"
    repo = config.repos[0]
    assert repo.url == str(tmp_path / "repos/templates")
    assert repo.local_path == tmp_path / "repos/templates"
    assert repo.init_from == tmp_path / "../seed"
    assert repo.webhook_secret_file == tmp_path / "secrets/hook"


def test_absolute_paths_stay_as_written(tmp_path: Path) -> None:
    config = parse(
        """
        state_dir: /srv/syncd
        repos:
          - name: local
            url: /srv/git/templates
            init_from: /opt/seed
            webhook_secret_file: /run/secrets/hook
        """,
        base_dir=tmp_path,
    )

    assert config.state_dir == Path("/srv/syncd")
    repo = config.repos[0]
    assert repo.url == "/srv/git/templates"
    assert repo.local_path == Path("/srv/git/templates")
    assert repo.init_from == Path("/opt/seed")
    assert repo.webhook_secret_file == Path("/run/secrets/hook")


def test_home_relative_paths_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = parse(minimal().replace("/var/lib/syncd", "~/syncd-state"), base_dir=tmp_path)
    assert config.state_dir == tmp_path / "home" / "syncd-state"


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.com/platform/templates.git",
        "http://git.internal/templates.git",
        "ssh://git@git.example.com:2222/platform/templates.git",
        "git://git.example.com/templates.git",
        "git@github.com:acme/templates.git",
        "deploy@git.example.com:platform/templates.git",
    ],
)
def test_remote_urls_are_untouched_and_not_local(url: str, tmp_path: Path) -> None:
    config = parse(f"state_dir: s\nrepos:\n  - name: r\n    url: '{url}'\n", base_dir=tmp_path)
    repo = config.repos[0]
    assert repo.url == url
    assert repo.local_path is None


def test_file_url_is_untouched_and_local(tmp_path: Path) -> None:
    config = parse(
        "state_dir: s\nrepos:\n  - name: r\n    url: file:///srv/git/templates\n",
        base_dir=tmp_path,
    )
    repo = config.repos[0]
    assert repo.url == "file:///srv/git/templates"
    assert repo.local_path == Path("/srv/git/templates")


def test_init_from_only_for_local_repos() -> None:
    found = problems(minimal(extra_repo="init_from: seed\n"))
    assert "local path" in problem_for(found, "repos[0].init_from")


# --- every problem at once -----------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    found = problems(
        """
        stat_dir: /var/lib/syncd
        aws:
          endpoint_url: localhost:5000
          embedded: "yes"
        backup:
          url: https://acme-syncd/prod/
          interval: 5
          sse: AES
        http:
          listen: "localhost"
        defaults:
          approval: sometimes
          on_failure: explode
          prune: "no"
          capabilities: [CAPABILITY_ADMIN]
        concurrency: 0
        repos:
          - name: platform
            url: https://git.example.com/platform.git
            poll_interval: 60
            branch: ..main
          - name: platform
            url: https://git.example.com/other.git
            deployments: []
          - name: app
            url: https://git.example.com/app.git
            stack_prefix: 1prod-
            watch: "true"
        """
    )

    expected = {
        "stat_dir",
        "state_dir",
        "aws.endpoint_url",
        "aws.embedded",
        "backup.url",
        "backup.interval",
        "backup.sse",
        "http.listen",
        "defaults.approval",
        "defaults.on_failure",
        "defaults.prune",
        "defaults.capabilities",
        "concurrency",
        "repos[0].poll_interval",
        "repos[0].branch",
        "repos[1].name",
        "repos[1].deployments",
        "repos[2].stack_prefix",
        "repos[2].watch",
    }
    reported = {p.split(": ", 1)[0] for p in found}
    assert reported == expected
    assert len(found) == len(expected)
    assert "did you mean 'state_dir'" in problem_for(found, "stat_dir")
    assert problem_for(found, "state_dir") == "required"
    assert "is used by another repo" in problem_for(found, "repos[1].name")
    assert "must be a whole number from 1" in problem_for(found, "concurrency")


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse("concurrency: -1\nbogus: 1\n")
    text = str(info.value)
    assert text.startswith(f"{SOURCE}: 4 problem(s)")
    for problem in info.value.problems:
        assert f"  {problem}" in text


def test_problems_in_a_repo_with_a_bad_name_are_still_reported() -> None:
    # Every problem in the file is reported at once. A bad name must not hide the
    # repo's other mistakes (the user would fix one, rerun, and only then see the next).
    found = problems(
        f"""
        state_dir: /var/lib/syncd
        repos:
          - name: Platform_Templates
            url: {REMOTE}
            poll_interval: 60
        """
    )
    assert {p.split(": ", 1)[0] for p in found} == {"repos[0].name", "repos[0].poll_interval"}


def test_problems_in_a_repo_without_url_are_still_reported() -> None:
    found = problems(
        """
        state_dir: /var/lib/syncd
        repos:
          - name: platform
            poll_interval: 60
            approval: sometimes
        """
    )
    assert {p.split(": ", 1)[0] for p in found} == {
        "repos[0].url",
        "repos[0].poll_interval",
        "repos[0].approval",
    }


# --- unknown keys --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key_path", "hint"),
    [
        (minimal(extra_top="stat_dir: x\n"), "stat_dir", "state_dir"),
        (minimal(extra_top="aws:\n  regoin: us-east-1\n"), "aws.regoin", "region"),
        (minimal(extra_top="backup:\n  intervall: 5s\n"), "backup.intervall", "interval"),
        (minimal(extra_top="http:\n  listn: 127.0.0.1:1\n"), "http.listn", "listen"),
        (
            minimal(extra_top="defaults:\n  on-failure: retry\n"),
            "defaults.on-failure",
            "on_failure",
        ),
        (
            minimal(extra_repo="polling_interval: 5s\n"),
            "repos[0].polling_interval",
            "poll_interval",
        ),
        (
            minimal(extra_repo="stacks:\n  network: {aproval: manual}\n"),
            "repos[0].stacks.network.aproval",
            "approval",
        ),
    ],
)
def test_unknown_keys_are_refused_with_a_hint(text: str, key_path: str, hint: str) -> None:
    found = problems(text)
    assert problem_for(found, key_path) == f"unknown key (did you mean {hint!r}?)"


def test_unknown_key_without_a_close_match_has_no_hint() -> None:
    found = problems(minimal(extra_top="zzzzzz: 1\n"))
    assert problem_for(found, "zzzzzz") == "unknown key"


# --- repos ---------------------------------------------------------------------------------


def test_duplicate_repo_names_are_refused() -> None:
    found = problems(
        """
        state_dir: /var/lib/syncd
        repos:
          - name: platform
            url: https://git.example.com/a.git
          - name: app
            url: https://git.example.com/b.git
          - name: platform
            url: https://git.example.com/c.git
        """
    )
    assert found == ["repos[2].name: 'platform' is used by another repo"]


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("Platform", "may hold only a-z, 0-9 and -"),
        ("my_repo", "may hold only a-z, 0-9 and -"),
        ("-lead", "may hold only a-z, 0-9 and -"),
        ("'with space'", "may hold only a-z, 0-9 and -"),
        ("'a/b'", "may hold only a-z, 0-9 and -"),
        ("''", "must not be empty"),
        ("42", "must be a string, not int"),
    ],
)
def test_bad_repo_names_are_refused(name: str, needle: str) -> None:
    found = problems(f"state_dir: /s\nrepos:\n  - name: {name}\n    url: {REMOTE}\n")
    assert needle in problem_for(found, "repos[0].name")


@pytest.mark.parametrize("name", ["a", "platform", "team-2-templates", "0day"])
def test_good_repo_names_are_accepted(name: str) -> None:
    config = parse(f"state_dir: /s\nrepos:\n  - name: {name}\n    url: {REMOTE}\n")
    assert config.repos[0].name == name


def test_missing_repo_name_and_url_are_required() -> None:
    found = problems("state_dir: /s\nrepos:\n  - branch: main\n")
    assert problem_for(found, "repos[0].name") == "required"
    assert problem_for(found, "repos[0].url") == "required"


def test_repos_must_be_a_list() -> None:
    found = problems("state_dir: /s\nrepos:\n  platform: {url: x}\n")
    assert problem_for(found, "repos") == "must be a list, not a mapping"


def test_stack_overrides_need_valid_stack_names() -> None:
    found = problems(minimal(extra_repo="stacks:\n  1network: {prune: true}\n"))
    assert problem_for(found, "repos[0].stacks.1network") == "is not a valid stack name"


@pytest.mark.parametrize(
    "globs", ["['/etc/*.yaml']", "['../other/*.yaml']", "[]", "'deployments/*.yaml'", "[1]"]
)
def test_deployment_globs_must_be_a_list_inside_the_repo(globs: str) -> None:
    found = problems(minimal(extra_repo=f"deployments: {globs}\n"))
    assert problem_for(found, "repos[0].deployments")


# --- invalid and empty files ---------------------------------------------------------------


def test_invalid_yaml_is_one_problem() -> None:
    found = problems("state_dir: [unclosed\nrepos:\n")
    assert len(found) == 1
    assert found[0].startswith("not valid YAML:")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_needs_state_dir_and_repos(text: str) -> None:
    found = problems(text)
    assert found == ["state_dir: required", "repos: required: at least one repo"]


def test_top_level_must_be_a_mapping() -> None:
    found = problems("- state_dir\n- repos\n")
    assert found[0] == "must be a mapping, not a list"
    assert "state_dir: required" in found


# --- options precedence --------------------------------------------------------------------


PRECEDENCE = """
state_dir: /var/lib/syncd
defaults:
  capabilities: [CAPABILITY_IAM]
  approval: manual
  prune: true
repos:
  - name: platform
    url: https://git.example.com/platform.git
    stack_prefix: prod-
    on_failure: retry
    stacks:
      network: {prune: false}
      prod-db: {approval: auto, on_failure: recreate}
  - name: plain
    url: https://git.example.com/plain.git
"""


def test_defaults_apply_to_repos_without_overrides() -> None:
    config = parse(PRECEDENCE)
    plain = config.repo("plain")
    assert config.defaults == StackOptions(
        ("CAPABILITY_IAM",), Approval.MANUAL, OnFailure.KEEP, True
    )
    assert plain.options == config.defaults
    assert plain.options_for("anything") == config.defaults


def test_repo_overrides_defaults_and_stack_overrides_repo() -> None:
    platform = parse(PRECEDENCE).repo("platform")

    repo_level = StackOptions(("CAPABILITY_IAM",), Approval.MANUAL, OnFailure.RETRY, True)
    assert platform.options == repo_level
    assert platform.options_for("prod-app") == repo_level
    assert platform.options_for("app") == repo_level
    network = StackOptions(("CAPABILITY_IAM",), Approval.MANUAL, OnFailure.RETRY, False)
    db = StackOptions(("CAPABILITY_IAM",), Approval.AUTO, OnFailure.RECREATE, True)
    assert platform.options_for("prod-network") == network  # `network`: a short name
    assert platform.options_for("prod-db") == db  # `prod-db`: a whole name


def test_a_stack_key_names_one_stack_only() -> None:
    # With the prefix prod-, the key prod-db is the stack prod-db: a stack a repo writer names
    # prod-prod-db does not get its options (its approval: auto, say).
    platform = parse(PRECEDENCE).repo("platform")
    assert platform.options_for("prod-prod-db") == platform.options
    assert platform.options_for("prod-prod-network") == platform.options


def test_stack_overrides_without_prefix_do_not_match_other_prefixes() -> None:
    platform = parse(PRECEDENCE).repo("platform")
    assert platform.options_for("dev-network") == platform.options


def test_unknown_capability_is_refused() -> None:
    found = problems(minimal(extra_top="defaults:\n  capabilities: [CAPABILITY_EVERYTHING]\n"))
    assert "unknown capabilities" in problem_for(found, "defaults.capabilities")


# --- backup and S3 URLs --------------------------------------------------------------------


@pytest.mark.parametrize("sse", [None, "AES256"])
def test_kms_key_id_needs_sse_kms(sse: str | None) -> None:
    backup = "backup:\n  url: s3://acme-syncd/prod/\n  kms_key_id: alias/syncd\n"
    if sse:
        backup += f"  sse: {sse}\n"
    found = problems(minimal(extra_top=backup))
    assert found == ["backup.kms_key_id: needs sse: aws:kms"]


def test_kms_key_id_with_sse_kms_is_accepted() -> None:
    config = parse(
        minimal(
            extra_top="backup:\n  url: s3://acme-syncd/\n  sse: aws:kms\n  kms_key_id: alias/k\n"
        )
    )
    assert config.backup == BackupConfig("s3://acme-syncd/", 5.0, "aws:kms", "alias/k")


@pytest.mark.parametrize(
    "url",
    [
        "https://acme-syncd.s3.amazonaws.com/prod/",
        "acme-syncd/prod/",
        "s3://",
        "s3://Acme_Syncd/prod/",
        "s3:/acme-syncd/prod/",
        "/var/backups",
    ],
)
@pytest.mark.parametrize("key_path", ["backup.url", "aws.template_bucket"])
def test_backup_url_and_template_bucket_must_be_s3_urls(url: str, key_path: str) -> None:
    section, key = key_path.split(".")
    found = problems(minimal(extra_top=f"{section}:\n  {key}: '{url}'\n"))
    assert "must be an s3://bucket/prefix/ URL" in problem_for(found, key_path)


@pytest.mark.parametrize("url", ["s3://acme-syncd", "s3://acme-syncd/", "s3://acme.syncd/a/b/"])
def test_good_s3_urls_are_accepted(url: str) -> None:
    config = parse(minimal(extra_top=f"backup:\n  url: {url}\naws:\n  template_bucket: {url}\n"))
    assert config.backup.url == url
    assert config.aws.template_bucket == url


def test_an_empty_repo_list_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("state_dir: /s\nrepos: []\n", "c.yaml", Path("/etc/syncd"))
    assert err.value.problems == ["repos: required: at least one repo"]


def test_watch_is_for_repositories_on_this_machine() -> None:
    local = parse(
        "state_dir: /var/lib/syncd\nrepos:\n  - {name: a, url: /srv/git/a.git, watch: true}\n"
    )
    assert local.repos[0].watch is True
    found = problems(minimal(extra_repo="watch: true\n"))
    assert "only for a repo on this machine" in problem_for(found, "repos[0].watch")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("9790", "127.0.0.1:9790"), (":9790", "127.0.0.1:9790"), ("0.0.0.0:80", "0.0.0.0:80")],
)
def test_http_listen_with_a_port_alone_binds_loopback(listen: str, expected: str) -> None:
    config = parse(minimal(extra_top=f'http: {{listen: "{listen}"}}\n'))
    assert config.http.listen == expected


def test_http_allowed_hosts_default_to_any_and_are_kept_as_a_host_header_names_them() -> None:
    assert parse(minimal()).http.allowed_hosts is None
    config = parse(
        minimal(
            extra_top="""\
            http:
              listen: 127.0.0.1:9280
              allowed_hosts: [Syncd.Example.com., 127.0.0.1, "[::1]", "fe80::1"]
            """
        )
    )
    assert config.http.allowed_hosts == ("syncd.example.com", "127.0.0.1", "::1", "fe80::1")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("[]", "non-empty list"),
        ("syncd.example.com", "non-empty list"),
        ("[syncd.example.com:443]", "no port"),
        ('["[::1]:9280"]', "no port"),
        ('["*.example.com"]', "not a host name"),
        ('["http://syncd.example.com"]', "no port"),
        ('[""]', "must not be empty"),
    ],
)
def test_bad_http_allowed_hosts_are_refused(value: str, needle: str) -> None:
    found = problems(minimal(extra_top=f"http: {{allowed_hosts: {value}}}\n"))
    assert needle in problem_for(found, "http.allowed_hosts")
