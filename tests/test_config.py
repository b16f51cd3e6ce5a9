"""lape_hub.config: the config file's [hub] and [sql] tables, repo ids, limits, the Hub
endpoint/offline/token helpers, retries and the one-line Hub error messages.

Everything runs in process on a config file in tmp_path; Hub failures are plain exception
objects carrying a fake response (no server)."""
from __future__ import annotations

import logging

import pytest

from lape_hub import config
from lape_hub.config import (ENV_CONFIG, ENV_REPO, HubSettings, SqlLimits, check_memory_limit,
                             check_timeout, config_path, configured_hub_repo, hub_api,
                             hub_endpoint, hub_error, hub_token, http_status, is_offline,
                             is_transient, load_settings, load_sql_limits, redact,
                             resolve_hub_repo, validate_repo_id, with_retries)
from lape_hub.errors import HubError, QueryError


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    monkeypatch.setenv(ENV_CONFIG, str(path))
    monkeypatch.delenv(ENV_REPO, raising=False)
    return path


def one_line(info):
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_config_path(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "c.toml"))
    assert config_path() == tmp_path / "c.toml"
    monkeypatch.setenv(ENV_CONFIG, "")  # empty: the platform's folder
    assert config_path().parts[-2:] == ("lape-hub", "config.toml")
    monkeypatch.delenv(ENV_CONFIG)
    assert config_path().parts[-2:] == ("lape-hub", "config.toml")


def test_settings_defaults_and_values(cfg):
    assert load_settings() == HubSettings(None, None, False, None)
    cfg.write_text('[hub]\nrepo = " org/cat "\nadapter_namespace = "org"\nprivate = true\n'
                   'max_download_mb = 12.5\n')
    assert load_settings() == HubSettings("org/cat", "org", True, 12.5)
    cfg.write_text("[other]\nx = 1\n")
    assert load_settings() == HubSettings()


@pytest.mark.parametrize("text, match", [
    ("[hub\n", r"^config file .*config\.toml: invalid TOML"),
    ('hub = "x"\n', r"config\.toml: \[hub\] must be a table$"),
    ("[hub]\nrepos = 1\nzzz = 2\n", r"unknown \[hub\] keys \['repos', 'zzz'\] \(known: repo, "
                                    r"adapter_namespace, private, max_download_mb\)$"),
    ("[hub]\nmax_download_mb = 0\n", r"max_download_mb must be a positive number of MiB, not 0$"),
    ("[hub]\nmax_download_mb = -1\n", "not -1$"),
    ("[hub]\nmax_download_mb = true\n", "not True$"),
    ("[hub]\nmax_download_mb = inf\n", "not inf$"),
    ("[hub]\nmax_download_mb = '5'\n", "not '5'$"),
    ("[hub]\nrepo = 'nope'\n", r"config\.toml: 'nope' is not a Hub repo id of the form ORG/NAME$"),
])
def test_settings_refused(cfg, text, match):
    cfg.write_text(text)
    with pytest.raises(HubError, match=match) as info:
        load_settings()
    one_line(info)


def test_settings_cap_limits(cfg):
    cfg.write_text("[hub]\nmax_download_mb = 1\n")
    assert load_settings().max_download_mb == 1
    cfg.write_text("[hub]\nmax_download_mb = 1e300\n")
    assert load_settings().max_download_mb == 1e300


@pytest.mark.parametrize("repo", ["org/name", "a/b", "O-r.g_1/n.a-m_e", "x" * 96 + "/y",
                                  "org/" + "n" * 96])
def test_repo_ids_accepted(repo):
    assert validate_repo_id(f" {repo}\n") == repo


@pytest.mark.parametrize("repo", ["org", "org/", "/name", "org/na/me", "org/-name", ".org/n",
                                  "org/na--me", "org/na..me", "org/n me", "x" * 97 + "/y",
                                  "org/" + "n" * 97, ""])
def test_repo_ids_refused(repo):
    with pytest.raises(HubError, match=r"^SRC: .* is not a Hub repo id of the form ORG/NAME$"):
        validate_repo_id(repo, source="SRC")


def test_repo_id_default_source():
    with pytest.raises(HubError, match="^--hub-repo: 'x' is not"):
        validate_repo_id("x")


def test_resolve_hub_repo_order(cfg, monkeypatch):
    with pytest.raises(HubError) as info:
        resolve_hub_repo(None)
    assert one_line(info) == (
        'no Hub repo given: pass --hub-repo ORG/NAME, set $LAPE_HUB_REPO, or set [hub] repo = '
        f'"ORG/NAME" in {cfg}')
    assert configured_hub_repo() is None
    cfg.write_text('[hub]\nrepo = "file/cat"\n')
    assert resolve_hub_repo(None) == "file/cat" == configured_hub_repo()
    monkeypatch.setenv(ENV_REPO, "env/cat")
    assert resolve_hub_repo(None) == "env/cat" == configured_hub_repo()
    assert resolve_hub_repo("flag/cat") == "flag/cat"
    assert resolve_hub_repo("") == "env/cat"  # empty flag: not given
    monkeypatch.setenv(ENV_REPO, "bad")
    with pytest.raises(HubError, match=r"^\$LAPE_HUB_REPO: 'bad' is not"):
        resolve_hub_repo(None)
    assert configured_hub_repo() is None
    with pytest.raises(HubError, match="^--hub-repo: 'x/' is not"):
        resolve_hub_repo("x/")
    monkeypatch.setenv(ENV_REPO, "")
    assert resolve_hub_repo(None) == "file/cat"


@pytest.mark.parametrize("value, want", [(2.5, 2.5), (1, 1.0), (1e-9, 1e-9)])
def test_timeout_accepted(value, want):
    got = check_timeout(value)
    assert got == want and type(got) is float


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), True, "5", None])
def test_timeout_refused(value):
    with pytest.raises(QueryError, match=r"^SRC: the SQL timeout must be a positive number of "
                                         r"seconds, not "):
        check_timeout(value, source="SRC")


def test_timeout_message_is_short():
    with pytest.raises(QueryError) as info:
        check_timeout("x" * 100)
    assert one_line(info).endswith("not '" + "x" * 39)  # repr cut at 40 characters
    assert one_line(info).startswith("--timeout: ")


@pytest.mark.parametrize("value, want", [("4GB", "4GB"), (" 512 MiB ", "512 MiB"),
                                         ("50%", "50%"), ("100%", "100%"), ("0.5%", "0.5%"),
                                         ("1.5gb", "1.5gb"), ("7KB", "7KB"), ("2TiB", "2TiB")])
def test_memory_limit_accepted(value, want):
    assert check_memory_limit(value) == want


@pytest.mark.parametrize("value", ["0GB", "0%", "100.5%", "101%", "4 G", "GB", "4XB", "-1GB",
                                   "4GB;", 4, None, "1e3MB", "4PB"])
def test_memory_limit_refused(value):
    with pytest.raises(QueryError, match=r"^SRC: the SQL memory limit must be a size like 4GB "
                                         r"or 512MiB, or a share of RAM like 50%, not "):
        check_memory_limit(value, source="SRC")
    with pytest.raises(QueryError, match="^--memory-limit: "):
        check_memory_limit(value)


def test_sql_limits_sources(cfg):
    assert load_sql_limits() == SqlLimits(60.0, "50%")
    assert load_sql_limits(2, "1GB") == SqlLimits(2.0, "1GB")
    cfg.write_text('[sql]\ntimeout = 5\nmemory_limit = "2GB"\n')
    assert load_sql_limits() == SqlLimits(5.0, "2GB")
    assert load_sql_limits(timeout_s=1) == SqlLimits(1.0, "2GB")
    assert load_sql_limits(memory_limit="3GB") == SqlLimits(5.0, "3GB")
    cfg.write_text('[sql]\ntimeout = 7\n')
    assert load_sql_limits() == SqlLimits(7.0, "50%")
    cfg.write_text('[sql]\nmemory_limit = "9%"\n')
    assert load_sql_limits() == SqlLimits(60.0, "9%")


@pytest.mark.parametrize("text, match", [
    ("[sql\n", r"^config file .*invalid TOML"),
    ('sql = 3\n', r"config\.toml: \[sql\] must be a table$"),
    ("[sql]\ntimeout = 1\nspeed = 2\nabc = 3\n",
     r"config\.toml: unknown \[sql\] keys \['abc', 'speed'\] \(known: timeout, memory_limit\)$"),
    ("[sql]\ntimeout = 0\n", r"config\.toml: \[sql\] timeout: the SQL timeout must be"),
    ("[sql]\nmemory_limit = 'lots'\n", r"config\.toml: \[sql\] memory_limit: the SQL memory"),
])
def test_sql_limits_refused(cfg, text, match):
    cfg.write_text(text)
    with pytest.raises(QueryError, match=match) as info:
        load_sql_limits()
    one_line(info)


def test_sql_limits_flags_checked(cfg):
    with pytest.raises(QueryError, match="^--timeout: "):
        load_sql_limits(timeout_s=-1)
    with pytest.raises(QueryError, match="^--memory-limit: "):
        load_sql_limits(memory_limit="x")


def test_endpoint_offline_token(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", "http://hub.local:8080//")
    assert hub_endpoint() == "http://hub.local:8080"
    monkeypatch.setenv("HF_ENDPOINT", "")
    assert hub_endpoint() == constants.ENDPOINT.rstrip("/")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for flag, want in [("1", True), ("yes", True), ("on", True), ("0", False), ("", False)]:
        monkeypatch.setenv("HF_HUB_OFFLINE", flag)
        assert is_offline() is want, flag
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "TRUE")
    assert is_offline() is True
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    for value in (True, False):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", value)
        assert is_offline() is value

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_saved")
    assert hub_token("hf_given") == "hf_given"
    assert hub_token(None) == "hf_saved" == hub_token("")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert hub_token(None) is None
    with pytest.raises(HubError, match="^no Hugging Face token: set HF_TOKEN"):
        hub_token(None, required=True)
    assert hub_token("hf_x", required=True) == "hf_x"


def test_hub_api(monkeypatch):
    from lape_hub import __version__

    monkeypatch.setenv("HF_ENDPOINT", "http://hub.local/")
    api = hub_api("hf_abc")
    assert api.endpoint == "http://hub.local" and api.token == "hf_abc"
    assert api.library_name == "lape-hub" and api.library_version == __version__
    assert hub_api(None).token is False  # never the implicit saved login
    assert hub_api("").token is False


def test_redact():
    assert redact("a hf_secret b hf_secret", "hf_secret") == "a hf_*** b hf_***"
    assert redact("text", None) == "text" == redact("text", "")


class Response:
    def __init__(self, status, message=None):
        self.status_code = status
        self.headers = {"X-Error-Message": message} if message else {}


class Failure(Exception):
    def __init__(self, status=None, message=None, text="failed\nsecond line"):
        super().__init__(text)
        self.response = Response(status, message) if status is not None else None


def test_http_status_and_transient():
    assert http_status(Failure(503)) == 503
    assert http_status(ValueError()) is None
    assert http_status(Failure()) is None
    for s in (500, 502, 599, 408, 429):
        assert is_transient(Failure(s)), s
    for s in (400, 401, 404, 409, 499):
        assert not is_transient(Failure(s)), s
    assert is_transient(ConnectionError()) and is_transient(TimeoutError())
    assert not is_transient(ValueError()) and not is_transient(OSError())


def test_with_retries(monkeypatch):
    sleeps = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    calls = []

    def flaky(n, exc):
        def call():
            calls.append(1)
            if len(calls) <= n:
                raise exc
            return "ok"
        return call

    assert with_retries(flaky(2, Failure(503)), retries=3, backoff=0.5) == "ok"
    assert sleeps == [0.5, 1.0] and len(calls) == 3
    calls.clear(), sleeps.clear()
    with pytest.raises(Failure):
        with_retries(flaky(5, Failure(500)), retries=2, backoff=1)
    assert len(calls) == 3 and sleeps == [1, 2]
    calls.clear(), sleeps.clear()
    with pytest.raises(Failure):
        with_retries(flaky(5, Failure(404)), retries=3, backoff=1)
    assert len(calls) == 1 and sleeps == []
    calls.clear(), sleeps.clear()
    monkeypatch.setattr(config, "RETRIES", 1)
    monkeypatch.setattr(config, "RETRY_BACKOFF_S", 0.25)
    with pytest.raises(ConnectionError):
        with_retries(flaky(5, ConnectionError()))
    assert len(calls) == 2 and sleeps == [0.25]
    calls.clear(), sleeps.clear()
    assert with_retries(flaky(0, None), retries=0) == "ok" and sleeps == []


def test_with_retries_logs(monkeypatch, caplog):
    monkeypatch.setattr("time.sleep", lambda s: None)
    seen = []

    def call():
        seen.append(1)
        if len(seen) == 1:
            raise Failure(502)
        if len(seen) == 2:
            raise TimeoutError()
        return 1

    with caplog.at_level(logging.WARNING, logger="lape_hub.config"):
        with_retries(call, retries=3, backoff=0.01)
    assert [r.getMessage() for r in caplog.records] == [
        "transient Hub error (502); retry 1/3 in 0.01s",
        "transient Hub error (TimeoutError); retry 2/3 in 0.02s"]


def hub_message(exc, **kw):
    kw.setdefault("repo_id", "org/cat")
    err = hub_error(exc, **kw)
    assert isinstance(err, HubError) and "\n" not in str(err)
    return str(err), err.status


def test_hub_error_messages(monkeypatch):
    from huggingface_hub.errors import (EntryNotFoundError, LocalTokenNotFoundError,
                                        OfflineModeIsEnabled, RevisionNotFoundError)

    monkeypatch.setenv("HF_ENDPOINT", "http://hub.local")
    assert hub_message(OfflineModeIsEnabled("x"), action="fetching") == (
        "offline (HF_HUB_OFFLINE=1): cannot reach dataset repo org/cat while fetching it", None)
    assert hub_message(LocalTokenNotFoundError("x"))[0] == (
        "no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    assert hub_message(Failure(401, "Invalid credentials in Authorization header"),
                       action="pushing", repo_type="model") == (
        "the Hub rejected the token (401 invalid credentials) while pushing model repo org/cat: "
        "set HF_TOKEN to a valid token or run `hf auth login`", 401)
    assert hub_message(Failure(401))[0].startswith(
        "dataset repo org/cat not found or private, and no valid token was sent (401)")
    assert hub_message(Failure(403), repo_id="lape-org/x")[0] == (
        "no write access to dataset repo lape-org/x (403): the token's user is not a member of "
        "'lape-org' or the token is read-only")
    rev = RevisionNotFoundError.__new__(RevisionNotFoundError)
    Exception.__init__(rev, "x")
    rev.response = Response(404)
    assert hub_message(rev, action="reading") == (
        "revision not found in dataset repo org/cat (404) while reading it", 404)
    entry = EntryNotFoundError("missing")
    assert hub_message(entry, action="reading")[0] == (
        "file not found in dataset repo org/cat (404) while reading it")
    assert hub_message(Failure(404))[0] == (
        "dataset repo org/cat not found on http://hub.local (404): check --hub-repo / "
        "$LAPE_HUB_REPO")
    for s in (409, 412):
        assert hub_message(Failure(s), action="committing") == (
            f"dataset repo org/cat changed while committing it (HTTP {s}: another publish landed "
            "first); nothing was committed: run the command again", s)
    assert hub_message(Failure(500), action="listing")[0] == (
        "the Hub failed (HTTP 500) while listing dataset repo org/cat; try again later")
    assert hub_message(Failure(599))[0].startswith("the Hub failed (HTTP 599)")
    assert hub_message(ConnectionError("down"), action="reaching") == (
        "cannot reach the Hub at http://hub.local while reaching dataset repo org/cat "
        "(ConnectionError)", None)
    assert hub_message(ValueError("odd\nmore"), action="parsing") == (
        "parsing dataset repo org/cat failed: ValueError: odd", None)
    assert hub_message(Failure(400, text="plain"), action="x")[0] == (
        "x dataset repo org/cat failed: Failure: plain")  # not an HfHubHTTPError


def test_hub_error_http_detail_and_redaction():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    def http(status, headers, text):
        r = httpx2.Response(status, headers=headers,
                            request=httpx2.Request("GET", "http://hub.local/x"))
        return HfHubHTTPError(text, response=r)

    assert hub_message(http(400, {"X-Error-Message": "bad name"}, "400 Client\nmore"),
                       action="creating") == (
        "the Hub refused creating dataset repo org/cat (HTTP 400): bad name", 400)
    assert hub_message(http(422, {}, "422 Unprocessable\nmore"), action="creating")[0] == (
        "the Hub refused creating dataset repo org/cat (HTTP 422): 422 Unprocessable")
    msg, _ = hub_message(http(400, {"X-Error-Message": "token hf_SECRET is bad"}, "x"),
                         token="hf_SECRET")
    assert "hf_SECRET" not in msg and "token hf_*** is bad" in msg


def test_survivor_killers(cfg, monkeypatch, caplog):
    """Details mutation testing found unchecked: each assertion pins one behaviour."""
    import httpx2
    import requests

    cfg.write_text('[hub]\nrepo = "org/cat"\n')  # a file without [sql]: the defaults
    assert load_sql_limits() == SqlLimits()
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError) as info:
        hub_token(None, required=True)
    assert str(info.value) == ("no Hugging Face token: set HF_TOKEN (a write token) or run "
                               "`hf auth login`")
    # the HTTP libraries' own connection errors are transient too
    assert is_transient(httpx2.ConnectError("refused"))
    assert is_transient(requests.ConnectionError("refused"))
    assert is_transient(requests.Timeout("slow"))
    assert not is_transient(requests.HTTPError("400"))
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.local")
    assert str(hub_error(ValueError("x"), repo_id="o/c")) == (
        "reaching dataset repo o/c failed: ValueError: x")  # the default action
    assert str(hub_error(Failure(401), repo_id="o/c")) == (
        "dataset repo o/c not found or private, and no valid token was sent (401): log in "
        "with HF_TOKEN or `hf auth login`, or check the repo id")
    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def once():
        calls.append(1)
        if len(calls) == 1:
            raise Failure(503)
        return 1

    with caplog.at_level(logging.WARNING):
        with_retries(once, retries=1, backoff=0)
    assert [r.name for r in caplog.records] == ["lape_hub.config"]
