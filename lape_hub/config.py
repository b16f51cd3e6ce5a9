"""How lape-hub reaches the Hugging Face Hub: which repo, endpoint and token, and what the
Hub's failures mean (one line each, as :class:`~lape_hub.errors.HubError`).

The catalog's Hub repo is, in order: ``--hub-repo ORG/NAME``, ``$LAPE_HUB_REPO``, then
``[hub] repo`` in the config file (``$LAPE_HUB_CONFIG``, else
``~/.config/lape-hub/config.toml`` via platformdirs)::

    [hub]
    repo = "my-org/lape-hub-catalog"     # the catalog's dataset repo
    adapter_namespace = "my-org"         # where `publish --missing` creates adapter repos
    private = false                      # visibility of repos lape-hub creates
    max_download_mb = 2048               # cap on one file read from the Hub (or
                                         # $LAPE_HUB_MAX_DOWNLOAD_MB)

The same file's ``[sql]`` table holds the limits of ``lape-hub sql`` (:class:`SqlLimits`,
:func:`load_sql_limits`)::

    [sql]
    timeout = 60                         # seconds (--timeout)
    memory_limit = "50%"                 # DuckDB's memory_limit (--memory-limit)

The token comes from ``HF_TOKEN`` or the huggingface_hub login (``hf auth login``); it is
handed to huggingface_hub and never printed, logged or written anywhere by lape-hub.

Example::

    >>> import os
    >>> os.environ["LAPE_HUB_REPO"] = "my-org/lape-hub-catalog"
    >>> resolve_hub_repo(None)
    'my-org/lape-hub-catalog'
    >>> resolve_hub_repo("other/cat")
    'other/cat'
    >>> del os.environ["LAPE_HUB_REPO"]
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from lape_hub.errors import HubError, LapeHubError, RegistryError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

T = TypeVar("T")

ENV_REPO = "LAPE_HUB_REPO"
RETRIES = 3               # transient Hub failures (5xx, 408, 429, connection) are retried ...
RETRY_BACKOFF_S = 1.0     # ... after 1 s, 2 s, 4 s
ENV_CONFIG = "LAPE_HUB_CONFIG"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class HubSettings:
    """The ``[hub]`` table of the config file (every field optional)."""

    repo: str | None = None
    adapter_namespace: str | None = None
    private: bool = False
    max_download_mb: float | None = None


def config_path() -> Path:
    """``$LAPE_HUB_CONFIG``, else ``<user config dir>/lape-hub/config.toml``."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("lape-hub")) / "config.toml"


def config_table(name: str, known: tuple[str, ...], error: type[Exception]
                 ) -> tuple[Path, dict[str, Any] | None]:
    """``(config path, its [name] table)``; None when the file does not exist. A malformed
    file, a non-table or an unknown key raises ``error`` with one line naming the file."""
    path = config_path()
    if not path.is_file():
        return path, None
    from lape_hub.toml import load_toml

    try:
        table = load_toml(path).get(name, {})
    except RegistryError as e:
        raise error(f"config file {e}") from None
    if not isinstance(table, dict):
        raise error(f"{path}: [{name}] must be a table")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise error(f"{path}: unknown [{name}] keys {unknown} (known: {', '.join(known)})")
    return path, table


def load_settings() -> HubSettings:
    """Read the ``[hub]`` table; a missing file gives the defaults, a malformed one an error."""
    path, hub = config_table("hub", ("repo", "adapter_namespace", "private", "max_download_mb"),
                             HubError)
    if hub is None:
        return HubSettings()
    cap = hub.get("max_download_mb")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float))
                            or not 0 < cap < float("inf")):
        raise HubError(f"{path}: [hub] max_download_mb must be a positive number of MiB, "
                       f"not {cap!r:.40}")
    repo = hub.get("repo")
    if repo is not None:
        repo = validate_repo_id(str(repo), source=str(path))
    return HubSettings(repo=repo, adapter_namespace=hub.get("adapter_namespace"),
                       private=bool(hub.get("private", False)), max_download_mb=cap)


def validate_repo_id(repo_id: str, *, source: str = "--hub-repo") -> str:
    """``ORG/NAME`` with Hub-legal characters, or a one-line HubError naming ``source``."""
    repo_id = repo_id.strip()
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubError(f"{source}: {repo_id!r} is not a Hub repo id of the form ORG/NAME")
    return repo_id


def resolve_hub_repo(explicit: str | None = None) -> str:
    """The catalog's Hub repo from ``explicit``, ``$LAPE_HUB_REPO`` or the config file."""
    if explicit:
        return validate_repo_id(explicit)
    env = os.environ.get(ENV_REPO)
    if env:
        return validate_repo_id(env, source=f"${ENV_REPO}")
    repo = load_settings().repo
    if repo:
        return repo
    raise HubError(f"no Hub repo given: pass --hub-repo ORG/NAME, set ${ENV_REPO}, or set "
                   f"[hub] repo = \"ORG/NAME\" in {config_path()}")


def configured_hub_repo() -> str | None:
    """The catalog's Hub repo from ``$LAPE_HUB_REPO`` or the config file; None if neither
    names a valid one (callers then fall back to asking for ``--hub-repo``)."""
    try:
        return resolve_hub_repo(None)
    except HubError:
        return None


@dataclass(frozen=True)
class SqlLimits:
    """Limits of one ``lape-hub sql`` query; the ``[sql]`` table of the config file::

        [sql]
        timeout = 60              # seconds before a query is stopped (--timeout)
        memory_limit = "50%"      # DuckDB's memory_limit: "4GB", "512MiB" or a share of RAM
                                  # (--memory-limit)
    """

    timeout_s: float = 60.0
    memory_limit: str = "50%"


_MEMORY_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[KMGT]i?B)\s*$", re.IGNORECASE)


def check_timeout(value: Any, *, source: str = "--timeout") -> float:
    """A positive, finite number of seconds, or a one-line QueryError naming ``source``.

    >>> check_timeout(2.5)
    2.5
    """
    from lape_hub.errors import QueryError

    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value < float("inf"):
        raise QueryError(f"{source}: the SQL timeout must be a positive number of seconds, "
                         f"not {value!r:.40}")
    return float(value)


def check_memory_limit(value: Any, *, source: str = "--memory-limit") -> str:
    """``"4GB"``, ``"512 MiB"``, ``"50%"`` (of RAM); anything else is a one-line QueryError.

    >>> check_memory_limit("4GB")
    '4GB'
    """
    from lape_hub.errors import QueryError

    m = _MEMORY_LIMIT.match(value) if isinstance(value, str) else None
    if m is None or float(m.group(1)) <= 0 or (m.group(2) == "%" and float(m.group(1)) > 100):
        raise QueryError(f"{source}: the SQL memory limit must be a size like 4GB or 512MiB, "
                         f"or a share of RAM like 50%, not {value!r:.40}")
    return value.strip()


def load_sql_limits(timeout_s: float | None = None,
                    memory_limit: str | None = None) -> SqlLimits:
    """The SQL limits: the given values, else the config file's ``[sql]`` table, else
    :class:`SqlLimits`' defaults (60 s, 50 % of RAM)."""
    from lape_hub.errors import QueryError

    path, table = config_table("sql", ("timeout", "memory_limit"), QueryError)
    table = table or {}
    limits = SqlLimits()
    timeout = (check_timeout(timeout_s) if timeout_s is not None
               else check_timeout(table["timeout"], source=f"{path}: [sql] timeout")
               if "timeout" in table else limits.timeout_s)
    memory = (check_memory_limit(memory_limit) if memory_limit is not None
              else check_memory_limit(table["memory_limit"], source=f"{path}: [sql] memory_limit")
              if "memory_limit" in table else limits.memory_limit)
    return SqlLimits(timeout_s=timeout, memory_limit=memory)


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` read now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """``HF_HUB_OFFLINE=1`` now, or huggingface_hub's offline mode as set at import."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if flag is not None:
        return flag.upper() in constants.ENV_VARS_TRUE_VALUES
    return bool(constants.HF_HUB_OFFLINE)


def hub_token(token: str | None = None, *, required: bool = False) -> str | None:
    """``token``, else ``$HF_TOKEN`` or the saved login; ``required`` makes None an error."""
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if required and not token:
        raise HubError("no Hugging Face token: set HF_TOKEN (a write token) or run "
                       "`hf auth login`")
    return token or None


def hub_api(token: str | None = None) -> "HfApi":
    """An ``HfApi`` on :func:`hub_endpoint` with ``token`` (not the implicit login)."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token if token else False,
                 library_name="lape-hub", library_version=_version())


def _version() -> str:
    from lape_hub import __version__

    return __version__


def redact(text: str, token: str | None) -> str:
    """``text`` with every occurrence of ``token`` replaced by ``hf_***``."""
    return text.replace(token, "hf_***") if token else text


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a huggingface_hub error, if it carries a response."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """5xx, 408, 429 and connection/timeouts: worth retrying."""
    import importlib

    status = http_status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    kinds: list[type] = [ConnectionError, TimeoutError]
    # the HTTP library under huggingface_hub: httpx2 (2.x), httpx (1.x) or requests (0.x)
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            kinds.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return isinstance(exc, tuple(kinds))


def with_retries(call: "Callable[[], T]", *, retries: int | None = None,
                 backoff: float | None = None) -> "T":
    """``call()``, retried with exponential backoff while it fails transiently."""
    import logging
    import time

    retries = RETRIES if retries is None else retries
    backoff = RETRY_BACKOFF_S if backoff is None else backoff
    attempt = 0
    while True:
        try:
            return call()
        except Exception as e:
            if not is_transient(e) or attempt >= retries:
                raise
            wait = backoff * 2 ** attempt
            attempt += 1
            logging.getLogger(__name__).warning(
                "transient Hub error (%s); retry %d/%d in %.2fs",
                http_status(e) or type(e).__name__, attempt, retries, wait)
            time.sleep(wait)


def hub_error(exc: BaseException, *, repo_id: str, repo_type: str = "dataset",
              action: str = "reaching", token: str | None = None) -> LapeHubError:
    """One clear line for a failed Hub call; 401, 403 and 404 are told apart.

    The returned error has ``status`` (the HTTP status or None). ``token`` is scrubbed from
    the message whatever the server said.
    """
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError,
                                        LocalTokenNotFoundError, OfflineModeIsEnabled,
                                        RevisionNotFoundError)

    kind = f"{repo_type} repo {repo_id}"
    status = http_status(exc)
    response: Any = getattr(exc, "response", None)
    server_msg = ""
    if response is not None:
        server_msg = response.headers.get("X-Error-Message") or ""
    endpoint = hub_endpoint()
    if isinstance(exc, OfflineModeIsEnabled):
        msg = f"offline (HF_HUB_OFFLINE=1): cannot reach {kind} while {action} it"
    elif isinstance(exc, LocalTokenNotFoundError):
        msg = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"
    elif status == 401 and "Invalid credentials" in server_msg:
        msg = (f"the Hub rejected the token (401 invalid credentials) while {action} {kind}: "
               "set HF_TOKEN to a valid token or run `hf auth login`")
    elif status == 401:
        msg = (f"{kind} not found or private, and no valid token was sent (401): log in with "
               "HF_TOKEN or `hf auth login`, or check the repo id")
    elif status == 403:
        msg = (f"no write access to {kind} (403): the token's user is not a member of "
               f"'{repo_id.split('/')[0]}' or the token is read-only")
    elif isinstance(exc, RevisionNotFoundError):
        msg = f"revision not found in {kind} (404) while {action} it"
    elif isinstance(exc, EntryNotFoundError):
        msg = f"file not found in {kind} (404) while {action} it"
    elif status == 404:
        msg = f"{kind} not found on {endpoint} (404): check --hub-repo / ${ENV_REPO}"
    elif status in (409, 412):
        msg = (f"{kind} changed while {action} it (HTTP {status}: another publish landed first); "
               "nothing was committed: run the command again")
    elif status is not None and status >= 500:
        msg = f"the Hub failed (HTTP {status}) while {action} {kind}; try again later"
    elif isinstance(exc, HfHubHTTPError) and status is not None:
        detail = server_msg or str(exc).splitlines()[0]
        msg = f"the Hub refused {action} {kind} (HTTP {status}): {detail}"
    elif is_transient(exc):
        msg = f"cannot reach the Hub at {endpoint} while {action} {kind} ({type(exc).__name__})"
    else:
        msg = f"{action} {kind} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    err = HubError(redact(msg, token))
    err.status = status  # type: ignore[attr-defined]
    return err
