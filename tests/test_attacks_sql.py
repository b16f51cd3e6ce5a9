"""Attacks on `lape-hub sql`: statements that write or read outside, lazy errors, limits,
output paths, the remote cache, and a property test over random keyword soup.

Every attack asserts exit 2 (130 for Ctrl-C), one line on stderr, no traceback, and that
neither the catalog nor a sibling "outside" folder (the working directory of the command,
where relative paths land) nor the remote cache changed by a single byte.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import duckdb
import pyarrow.parquet as pq
import pytest
from attack_helpers import assert_one_line_error, run_cli, tree_hashes
from click.testing import CliRunner
from hub_server import build_catalog, hub  # noqa: F401 - the hub fixture

from lape_hub.catalog import Catalog
from lape_hub.config import SqlLimits
from lape_hub.errors import LapeHubError, QueryError, QueryRefusedError
from lape_hub.query import check_read_only, connect, result_table, run_sql

SLOW = "SELECT sum(hash(i)) FROM range(100000000000) t(i)"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny catalog, a sibling folder with a secret file, an empty cache and config."""
    base = tmp_path_factory.mktemp("sql-attacks")
    cat = build_catalog(base / "catalog", ("npi_Deva", "mlt_Latn"))
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("hunter2\n")
    (outside / "secret.csv").write_text("password\nhunter2\n")
    cache = base / "cache"
    cache.mkdir()
    env = {"LAPE_HUB_CATALOG": str(cat.root), "LAPE_HUB_CACHE": str(cache),
           "LAPE_HUB_CONFIG": str(base / "config.toml"), "HF_HUB_OFFLINE": "1"}
    return {"cat": cat, "outside": outside, "cache": cache, "env": env, "base": base}


def data_file(cat: Catalog) -> str:
    return str(cat.entries("neurons")[0].path)


def run_here(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    """``lape-hub ARGS`` through the console entry point's ``main`` (its error mapping
    included) in this process: the same code path as :func:`run_cli`, without paying a
    Python start-up per attack. Environment, working directory and ``sys.meta_path`` (which
    ``main`` changes for read-only commands) are restored afterwards."""
    from lape_hub.cli import main

    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.meta_path)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.meta_path[:] = saved_path
    return subprocess.CompletedProcess(["lape-hub", *args], code, out.getvalue(), err.getvalue())


def unchanged(world, *args: str, code: int = 2, needle: str | None = None,
              env: dict | None = None, subprocess_: bool = False) -> str:
    """Run ``lape-hub ARGS`` in the outside folder (in this process, or with
    ``subprocess_`` as a new one); one-line error, nothing changed."""
    roots = [world["cat"].root, world["outside"], world["cache"]]
    before = [tree_hashes(r) for r in roots]
    run = run_cli if subprocess_ else run_here
    r = run(*args, env=dict(world["env"], **(env or {})), cwd=world["outside"])
    line = assert_one_line_error(r, code=code, needle=needle)
    assert [tree_hashes(r) for r in roots] == before, f"{args} changed files"
    return line


# -- statements that write, load, reconfigure or read outside: refused by the guard ---------
ATTACKS = {
    # the example: an allowed EXPLAIN runs the COPY it wraps
    "explain-analyze-copy-over-catalog": "EXPLAIN ANALYZE COPY neurons TO '{data}' (FORMAT parquet)",
    "explain-options-copy": "EXPLAIN (ANALYZE, FORMAT json) COPY neurons TO '{out}/x.csv'",
    "explain-comment-copy": "/* hi */ EXPLAIN /* there */ ANALYSE COPY neurons TO 'rel.csv'",
    "copy-to-outside": "COPY (SELECT * FROM neurons) TO '{out}/x.csv'",
    "copy-over-data-file": "COPY neurons TO '{data}' (FORMAT parquet, OVERWRITE true)",
    "copy-relative": "COPY neurons TO 'x.parquet'",
    "copy-from": "COPY neurons FROM '{out}/secret.txt'",
    "export-database": "EXPORT DATABASE '{out}/exported'",
    "attach-in-catalog": "ATTACH '{cat}/x.db' AS x",
    "create-table": "CREATE TABLE t AS SELECT * FROM neurons",
    "create-macro": "CREATE MACRO m(a) AS a + 1",
    "create-persistent-secret": "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')",
    "insert": "INSERT INTO neurons SELECT * FROM neurons",
    "delete": "DELETE FROM neurons",
    "drop-view": "DROP VIEW neurons",
    "install": "INSTALL httpfs",
    "load-file": "LOAD '{out}/evil.duckdb_extension'",
    "set-external-access": "SET enable_external_access = true",
    "reset-lock": "RESET lock_configuration",
    "pragma-profiling-output": "PRAGMA profiling_output = '{out}/profile.json'",
    "call-enable-logging": "CALL enable_logging(storage = 'file', storage_path = '{out}/logs')",
    "prepare-copy": "PREPARE p AS COPY neurons TO '{out}/p.csv'",
    "execute": "EXECUTE p",
    "two-statements": "SELECT 1; COPY neurons TO '{out}/two.csv'",
    "select-then-drop": "SELECT 1; DROP VIEW neurons",
    "trailing-statement": "SELECT 1;\n-- comment\nCHECKPOINT",
    "pivot-multi": "PIVOT neurons ON lang USING count(*)",
    "use-other-db": "USE memory",
    "detach": "DETACH memory",
    "vacuum": "VACUUM",
    "begin": "BEGIN TRANSACTION",
    "empty": "  -- only a comment",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_statement_refused(world, name):
    q = ATTACKS[name].format(data=data_file(world["cat"]), out=world["outside"],
                             cat=world["cat"].root)
    real = name in ("explain-analyze-copy-over-catalog", "two-statements", "copy-to-outside")
    line = unchanged(world, "sql", q, needle="refused", subprocess_=real)
    assert "error:" in line
    for leftover in ("x.csv", "x.parquet", "rel.csv", "exported", "p.csv", "two.csv", "logs"):
        assert not (world["outside"] / leftover).exists()


# -- reads outside the catalog: DuckDB itself can open no file ------------------------------
READS = {
    "read-text-outside": "SELECT * FROM read_text('{out}/secret.txt')",
    "read-blob-catalog-file": "SELECT content FROM read_blob('{data}')",
    "read-csv-passwd": "SELECT * FROM read_csv('/etc/passwd')",
    "sniff-csv": "SELECT * FROM sniff_csv('{out}/secret.txt')",
    "glob-root": "SELECT * FROM glob('/*')",
    "replacement-scan": "SELECT * FROM '{out}/secret.csv'",
    "parquet-metadata": "SELECT * FROM parquet_metadata('{data}')",
    "secrets-dir": "SELECT * FROM duckdb_secrets()",
}


@pytest.mark.parametrize("name", sorted(READS))
def test_reading_files_refused(world, name):
    q = READS[name].format(data=data_file(world["cat"]), out=world["outside"])
    line = unchanged(world, "sql", q, needle="refused", subprocess_=name == "read-text-outside")
    assert "hunter2" not in line


@pytest.mark.parametrize("query,needle", [
    ("SELECT getenv('HOME')", "getenv"),                       # no such function here
    ("SELECT * FROM query('COPY neurons TO ''x.csv''')", "SQL error"),
    ("SELECT * FROM enable_logging()", "locked"),              # SELECT-shaped reconfiguring
    ("SELECT CASE WHEN layer = 5 THEN error('boom') END FROM neurons", "boom"),  # lazy
    ("SELECT lang::INTEGER FROM neurons", "conversion"),      # cast fails while fetching
    ("SELECT * FROM no_such_table", "no_such_table"),
    ("SELEC 1", "syntax"),
])
def test_runtime_errors_are_one_line(world, query, needle):
    unchanged(world, "sql", query, needle=needle)


def test_lazy_errors_in_every_format(world, tmp_path):
    q = "SELECT CASE WHEN layer = 5 THEN error('late boom') ELSE layer END AS x FROM neurons"
    for args in (["--format", "csv"], ["--format", "json"], ["-o", str(tmp_path / "r.parquet")]):
        unchanged(world, "sql", q, *args, needle="late boom")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# -- limits -------------------------------------------------------------------------------
def test_timeout_stops_a_slow_query(world):
    t = time.monotonic()
    unchanged(world, "sql", SLOW, "--timeout", "0.5", needle="time limit", subprocess_=True)
    assert time.monotonic() - t < 30


def test_timeout_from_config_file(world):
    config = world["base"] / "config.toml"
    config.write_text('[sql]\ntimeout = 0.5\nmemory_limit = "1GB"\n')
    try:
        unchanged(world, "sql", SLOW, needle="0.5 s")
    finally:
        config.unlink()


def test_memory_limit_stops_a_big_query(world):
    q = "SELECT count(DISTINCT hash(i)::VARCHAR) FROM range(5000000) t(i)"
    unchanged(world, "sql", q, "--memory-limit", "20MB", needle="memory limit", subprocess_=True)


@pytest.mark.parametrize("args,needle", [
    (["--timeout", "-5"], "timeout"), (["--timeout", "nan"], "timeout"),
    (["--memory-limit", "lots"], "memory limit"), (["--memory-limit", "250%"], "memory limit"),
])
def test_bad_limits_refused(world, args, needle):
    unchanged(world, "sql", "SELECT 1", *args, needle=needle)


def test_bad_config_limits_refused(world):
    config = world["base"] / "config.toml"
    for body, needle in (('[sql]\ntimeout = "soon"\n', "timeout"),
                         ('[sql]\nmemory = "1GB"\n', "unknown [sql] keys")):
        config.write_text(body)
        try:
            unchanged(world, "sql", "SELECT 1", needle=needle)
        finally:
            config.unlink()


def test_ctrl_c_is_one_line_exit_130(world):
    e = dict(os.environ, **world["env"])
    p = subprocess.Popen([sys.executable, "-m", "lape_hub.cli", "sql", SLOW], cwd=world["outside"],
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)  # past start-up (imports): the query runs; it would take hours
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    assert_one_line_error(r, code=130)


# -- output paths ----------------------------------------------------------------------------
def test_output_paths_refused(world, tmp_path):
    q = "SELECT lang, count(*) AS n FROM neurons GROUP BY lang"
    cat, cache = world["cat"].root, world["cache"]
    link = world["outside"] / "link.csv"
    link.symlink_to(cat / "evil.csv")
    try:
        cases = [
            ([str(cat / "r.csv")], "inside the catalog"),
            ([str(cat / "neurons" / "r.parquet")], "inside the catalog"),
            ([str(cache / "r.csv")], "cache"),
            ([str(link)], "inside the catalog"),                 # a link into the catalog
            ([str(tmp_path)], "folder"),                          # a directory
            ([str(tmp_path / "missing" / "r.csv")], "does not exist"),
            ([str(tmp_path / "r.json"), "--format", "csv"], "--format"),  # mismatch
            ([str(tmp_path / "r.dat")], "tells no format"),
            ([str(tmp_path / "r.csv"), "--format", "table"], "terminal"),
        ]
        for extra, needle in cases:
            unchanged(world, "sql", q, "-o", *extra, needle=needle)
        unchanged(world, "sql", q, "--format", "parquet", needle="-o")
        assert not (tmp_path / "missing").exists() and not (cat / "evil.csv").exists()
    finally:
        link.unlink()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anyway")
def test_unwritable_output_refused(world, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        unchanged(world, "sql", "SELECT 1 AS x", "-o", str(locked / "r.csv"), needle="writable")
    finally:
        locked.chmod(0o700)


def test_format_follows_suffix(world, tmp_path):
    q = "SELECT lang, count(*) AS n FROM neurons GROUP BY lang ORDER BY lang"
    env = world["env"]
    runner = CliRunner()
    for name in ("r.csv", "r.jsonl", "r.parquet"):
        r = runner.invoke(_cli(), ["sql", q, "-o", str(tmp_path / name)], env=env)
        assert r.exit_code == 0, r.output
    assert (tmp_path / "r.csv").read_text().splitlines()[1] == '"mlt_Latn",54'
    assert json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0]) == \
        {"lang": "mlt_Latn", "n": 54}
    assert pq.read_table(tmp_path / "r.parquet").to_pylist()[1] == {"lang": "npi_Deva", "n": 54}


def _cli():
    from lape_hub.cli import cli

    return cli


# -- every type prints in every format -------------------------------------------------------
ALL_TYPES = "SELECT * FROM test_all_types()"


def test_every_type_prints_in_every_format(world, tmp_path):
    runner = CliRunner()
    env = world["env"]
    n_cols = len(duckdb.sql("DESCRIBE " + ALL_TYPES).fetchall())
    r = runner.invoke(_cli(), ["sql", ALL_TYPES], env=env)
    assert r.exit_code == 0 and f"{n_cols} columns" in r.output and "3 rows" in r.output, \
        r.output
    r = runner.invoke(_cli(), ["sql", ALL_TYPES, "--format", "csv"], env=env)
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.output)))
    assert len(rows) == 4 and {len(x) for x in rows} == {n_cols}
    lists = rows[0].index("int_array")
    assert json.loads(rows[1][lists]) == [] and json.loads(rows[2][lists])[0] == 42  # JSON text

    def strict(c):
        raise ValueError(f"non-JSON constant {c}")

    r = runner.invoke(_cli(), ["sql", ALL_TYPES, "--format", "json"], env=env)
    assert r.exit_code == 0, r.output
    objs = [json.loads(line, parse_constant=strict) for line in r.output.splitlines()]
    assert len(objs) == 3 and len(objs[0]) == n_cols
    r = runner.invoke(_cli(), ["sql", "SELECT 'nan'::DOUBLE AS d, ['-inf'::FLOAT] AS l",
                               "--format", "json"], env=env)
    assert json.loads(r.output, parse_constant=strict) == {"d": "NaN", "l": ["-Infinity"]}
    out = tmp_path / "all.parquet"
    r = runner.invoke(_cli(), ["sql", ALL_TYPES.replace("*", "* EXCLUDE (empty_struct)"), "-o",
                               str(out)], env=env)
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).num_columns == n_cols - 1


def test_repeated_column_names_keep_their_values(world, tmp_path):
    """Columns are converted by position: `SELECT [1] AS a, [2] AS a` must not print [1]
    twice (a conversion by name would)."""
    runner = CliRunner()
    q = "SELECT [1] AS a, [2] AS a, INTERVAL 3 DAY AS a, 4 AS a_1"
    r = runner.invoke(_cli(), ["sql", q, "--format", "csv"], env=world["env"])
    assert r.exit_code == 0, r.output
    assert list(csv.reader(io.StringIO(r.output)))[1] == ["[1]", "[2]", "3 days", "4"]
    r = runner.invoke(_cli(), ["sql", q, "-o", str(tmp_path / "d.parquet")], env=world["env"])
    assert r.exit_code == 0, r.output
    assert pq.ParquetFile(tmp_path / "d.parquet").read().to_pylist() == \
        [{"a": [1], "a_2": [2], "a_3": "3 days", "a_1": 4}]


def test_unholdable_column_is_a_clear_refusal(world, tmp_path):
    out = tmp_path / "e.parquet"
    unchanged(world, "sql", "SELECT {} AS empty_struct", "-o", str(out), needle="parquet")
    assert list(tmp_path.iterdir()) == []


# -- the second line of defence, tested on its own ---------------------------------------------
def test_connection_cannot_write_or_reconfigure_without_the_guard(world):
    """Statements the guard would refuse, run straight on the connection: DuckDB itself
    refuses each (no file access at all, configuration locked). Kills removing
    lock_configuration, enable_external_access=false or temp_directory=''."""
    cat, out = world["cat"], world["outside"]
    roots = [cat.root, out]
    before = [tree_hashes(r) for r in roots]
    con = connect(cat, limits=SqlLimits(memory_limit="256MB"))
    settings = "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
    want = con.execute(settings).fetchall()
    for stmt in [f"COPY neurons TO '{out}/x.csv'", f"COPY neurons TO '{data_file(cat)}'",
                 f"EXPORT DATABASE '{out}/exp'", f"ATTACH '{out}/a.db'",
                 "SET memory_limit = '64GB'", f"SET temp_directory = '{out}/spill'",
                 "SET enable_external_access = true", f"SET allowed_directories = ['{out}']",
                 "RESET lock_configuration", "SET lock_configuration = false",
                 "SET threads = 1", "PRAGMA enable_profiling",
                 f"CALL enable_logging(storage = 'file', storage_path = '{out}/logs')",
                 "INSTALL httpfs", "LOAD httpfs",
                 f"SELECT * FROM read_text('{out}/secret.txt')",
                 f"SELECT * FROM read_blob('{data_file(cat)}')"]:
        with pytest.raises(duckdb.Error):
            con.execute(stmt).fetchall()
    assert con.execute(settings).fetchall() == want
    assert want[0][1] == ""  # no spill folder
    # the views still work on that connection
    assert con.execute("SELECT count(*) FROM neurons").fetchone()[0] > 0
    assert [tree_hashes(r) for r in roots] == before


def test_guard_looks_inside_explain():
    con = duckdb.connect()
    for ok in ["SELECT 1", "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1",
               "EXPLAIN (ANALYZE, FORMAT json) SELECT 1", "/* c */ EXPLAIN -- x\n SELECT 1",
               "DESCRIBE SELECT 1", "FROM range(3)", "WITH a AS (SELECT 1) SELECT * FROM a"]:
        check_read_only(con, ok)
    for bad in ["EXPLAIN COPY (SELECT 1) TO 'x.csv'", "EXPLAIN ANALYZE CREATE TABLE t (i INT)",
                "EXPLAIN (FORMAT json) INSERT INTO t VALUES (1)", "EXPLAIN ANALYZE SET threads=1",
                "EXPLAIN PREPARE p AS SELECT 1", "EXPLAIN EXECUTE p", "EXPLAIN PRAGMA version",
                "EXPLAIN INSTALL httpfs", "EXPLAIN CALL pragma_version()", "EXPLAIN BEGIN",
                "EXPLAIN ANALYZE CHECKPOINT", "EXPLAIN CREATE SECRET s (TYPE s3)"]:
        with pytest.raises(QueryRefusedError, match="EXPLAIN wraps"):
            check_read_only(con, bad)
    for unparsable in ["EXPLAIN ANALYZE ATTACH 'x.db'", "EXPLAIN EXPORT DATABASE 'd'",
                       "EXPLAIN ((SELECT 1))", "EXPLAIN"]:
        with pytest.raises(QueryRefusedError):
            check_read_only(con, unparsable)


def test_run_sql_python_api(world):
    rel = run_sql(world["cat"], "SELECT count(DISTINCT lang) FROM neurons")
    assert rel.fetchall() == [(2,)]
    with pytest.raises(QueryError, match="time limit"):
        result_table(world["cat"], SLOW, limits=SqlLimits(timeout_s=0.3))


# -- the remote cache is a catalog root like any other ----------------------------------------
def test_remote_sql_cannot_write_the_cache(hub, tmp_path, monkeypatch):
    from hub_server import build_catalog as build

    from lape_hub.publisher import publish_catalog
    from lape_hub.remote import remote_catalog

    repo = "alice/lape-catalog"
    publish_catalog(build(tmp_path / "local", ("npi_Deva", "mlt_Latn")), repo, backoff=0.01)
    cached = remote_catalog(repo)  # download once, in-process (the fake hub lives here)
    cache = tmp_path / "lape-cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    world = {"cat": cached, "outside": outside, "cache": cache,
             "env": {"LAPE_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                     "LAPE_HUB_CONFIG": str(tmp_path / "config.toml"),
                     "LAPE_HUB_CATALOG": str(tmp_path / "local")}}
    target = str(cached.entries("neurons")[0].path)
    remote = ["--remote", "--hub-repo", repo]
    unchanged(world, "sql", f"EXPLAIN ANALYZE COPY neurons TO '{target}'", *remote,
              needle="refused")
    unchanged(world, "sql", f"SELECT * FROM read_blob('{target}')", *remote, needle="refused")
    unchanged(world, "sql", "SELECT count(*) FROM neurons", *remote, "-o",
              str(cached.root / "r.csv"), needle="cache")
    r = run_cli("sql", "SELECT count(DISTINCT lang) AS n FROM neurons", *remote, "--format",
                "csv", env=world["env"], cwd=outside)
    assert r.returncode == 0 and r.stdout.splitlines() == ['"n"', "2"], r.stderr


# -- property: no text built from DuckDB's keywords changes a file ---------------------------
@pytest.fixture
def soup_world(world, monkeypatch):
    """The catalog, a sibling folder as working directory, and the texts' ingredients."""
    from hypothesis import strategies as st

    cat, sibling = world["cat"], world["base"] / "sibling"
    sibling.mkdir(exist_ok=True)
    (sibling / "keep.txt").write_text("keep\n")
    monkeypatch.chdir(sibling)  # relative paths would land here
    keywords = [k for (k,) in duckdb.sql("SELECT keyword_name FROM duckdb_keywords()").fetchall()]
    paths = [data_file(cat), str(cat.root / "x.parquet"), str(sibling / "keep.txt"),
             str(sibling / "new.csv"), "rel.csv", str(cat.root), str(sibling)]
    atoms = (["neurons", "activation_counts", "lape", "adapters", "*", "(", ")", ",", ";", "=",
              "1", "'x'", "p"] + [f"'{p}'" for p in paths])
    writes = [f"COPY neurons TO '{p}'" for p in paths[:5]] + [
        f"ATTACH '{paths[1]}' AS a", f"EXPORT DATABASE '{sibling}/exp'",
        "CREATE TABLE t AS SELECT 1", "INSERT INTO neurons SELECT * FROM neurons",
        "SET temp_directory = 'spill'", "INSTALL httpfs", "DROP VIEW neurons",
        f"CALL enable_logging(storage = 'file', storage_path = '{sibling}/logs')",
        "SELECT * FROM neurons", f"SELECT * FROM read_text('{paths[2]}')"]
    prefixes = ["", "EXPLAIN ", "EXPLAIN ANALYZE ", "EXPLAIN (ANALYZE) ", "PREPARE p AS ",
                "SELECT 1; ", "WITH x AS (SELECT 1) ", "/* */ EXPLAIN (FORMAT json, ANALYZE) "]
    soup = st.lists(st.sampled_from(keywords) | st.sampled_from(atoms), min_size=1,
                    max_size=12).map(" ".join)
    shaped = st.builds(lambda p, w, s: p + w + s, st.sampled_from(prefixes),
                       st.sampled_from(writes), st.sampled_from(["", ";", "; SELECT 1", " --"]))
    roots = [cat.root, sibling, world["outside"]]
    return {"cat": cat, "texts": st.one_of(soup, shaped), "shaped": shaped, "roots": roots,
            "before": [tree_hashes(r) for r in roots]}


def test_keyword_soup_never_changes_files(soup_world):
    """200 random texts through the guard; what it lets through runs on one locked-down
    connection (cheap to reuse: DuckDB takes ~0.1 s to open one); no file ever changes
    and the connection ends as it began (no table, same settings)."""
    from hypothesis import HealthCheck, given, settings

    w = soup_world
    con = connect(w["cat"], limits=SqlLimits(memory_limit="256MB"))
    state = "SELECT current_setting('memory_limit'), (SELECT count(*) FROM duckdb_tables())"
    start = con.execute(state).fetchall()
    seen = {"ran": 0, "refused": 0}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(w["texts"])
    def check(text):
        try:
            check_read_only(con, text)
        except QueryRefusedError as e:
            assert "\n" not in str(e)
            seen["refused"] += 1
        else:
            timer = threading.Timer(5, con.interrupt)
            timer.start()
            try:
                con.sql(text).fetchall()
                seen["ran"] += 1
            except duckdb.Error:
                seen["refused"] += 1
            finally:
                timer.cancel()
        assert [tree_hashes(r) for r in w["roots"]] == w["before"], text

    check()
    assert con.execute(state).fetchall() == start
    assert seen["refused"] > 100 and seen["ran"] > 0, seen


def test_wrapped_writes_never_change_files(soup_world):
    """Writes wrapped in EXPLAIN/PREPARE/CTEs/second statements, through the whole
    library path (fresh connection, worker thread, limits): each is a one-line error."""
    from hypothesis import HealthCheck, given, settings

    w = soup_world
    limits = SqlLimits(timeout_s=5, memory_limit="256MB")

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(w["shaped"])
    def check(text):
        try:
            result_table(w["cat"], text, limits=limits)
        except LapeHubError as e:
            assert "\n" not in str(e)
        assert [tree_hashes(r) for r in w["roots"]] == w["before"], text

    check()
