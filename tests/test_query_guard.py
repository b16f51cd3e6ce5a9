"""lape_hub.query in process: the statement guard's decisions and messages, the locked
connection, error mapping under the limits, result conversion per format and writing.

Fast companions of tests/test_attacks_sql.py (which attacks through the CLI): these call
the library directly, so mutation testing (scripts/mutation.py query) stays quick.
"""
from __future__ import annotations

import io
import json
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import SELECTION, build_catalog

from lape_hub import query
from lape_hub.catalog import Catalog
from lape_hub.config import SqlLimits
from lape_hub.errors import QueryError, QueryRefusedError, SchemaError
from lape_hub.query import (_explained, _for_format, _json_lines, _limited, check_read_only,
                            connect, entry_file, render_table, result_table, run_sql,
                            write_result)
from lape_hub.schemas import table_names

LANGS = ("npi_Deva", "mlt_Latn")


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    return build_catalog(tmp_path_factory.mktemp("guard") / "catalog", LANGS, per_layer=2)


@pytest.fixture
def con():
    c = duckdb.connect()
    yield c
    c.close()


def refused(con, q):
    with pytest.raises(QueryRefusedError) as info:
        check_read_only(con, q)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---- the guard ----------------------------------------------------------------------

@pytest.mark.parametrize("q", [
    "SELECT 1", "FROM range(3)", "DESCRIBE SELECT 1", "SUMMARIZE SELECT 1",
    "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT 1", "explain analyse select 1",
    "EXPLAIN (FORMAT json) SELECT 1", "EXPLAIN /* c */ ANALYZE -- d\n SELECT 1",
    "SELECT 1;", "  SELECT 1  ",
])
def test_reads_pass(con, q):
    check_read_only(con, q)


def test_refusal_messages(con):
    assert refused(con, "COPY (SELECT 1) TO 'x.csv'") == (
        "refused: a COPY statement, which writes or reads files; lape-hub sql only reads the "
        "catalog (use SELECT)")
    assert refused(con, "CALL pragma_version()").endswith(
        "(use SELECT) (for table functions use SELECT * FROM fn(...))")
    assert "runs a procedure" in refused(con, "CALL pragma_version()")
    assert refused(con, "SET threads=1").startswith(
        "refused: a SET statement, which changes settings;")
    assert refused(con, "DETACH db").startswith(
        "refused: a DETACH statement, which detaches a database;")


def test_statement_the_binding_cannot_name(con):
    """DuckDB 1.4's Python API raises ValueError on UPDATE EXTENSIONS' type: still a
    one-line refusal (it was a traceback)."""
    assert refused(con, "UPDATE EXTENSIONS") == (
        "refused: a UPDATE statement, which is not a read; lape-hub sql only reads the "
        "catalog (use SELECT)")
    assert refused(con, "SELECT 1; UPDATE EXTENSIONS").startswith(
        "refused: 2 statements (SELECT, UPDATE);")
    assert refused(con, "") == "refused: no statement; give one SELECT"
    assert refused(con, "-- only a comment") == "refused: no statement; give one SELECT"


def test_several_statements(con):
    msg = refused(con, "SELECT 1; DROP TABLE x; SELECT 2; SET a=1; SELECT 3")
    assert msg == ("refused: 5 statements (SELECT, DROP, SELECT, SET); lape-hub sql runs "
                   "exactly one statement per call")
    assert refused(con, "SELECT 1; SELECT 2").startswith("refused: 2 statements (SELECT, SELECT)")


def test_prepare_execute_and_multi(con):
    msg = refused(con, "PREPARE p AS SELECT 1")
    assert msg == ("refused: PREPARE: one statement runs per call, so nothing can be prepared "
                   "and then executed; run the SELECT itself")
    assert refused(con, "EXECUTE p").startswith("refused: EXECUTE: ")
    con.execute("CREATE TABLE t AS SELECT 1 AS k, 'a' AS v")
    assert refused(con, "PIVOT t ON v USING sum(k)") == (
        "refused: this statement expands into several (a PIVOT without an IN list creates a "
        "type first); list the values: PIVOT t ON col IN (...)")


def test_explain_wrapping(con):
    assert refused(con, "EXPLAIN COPY (SELECT 1) TO 'x'").startswith(
        "refused: EXPLAIN wraps a COPY statement, which writes or reads files;")
    assert refused(con, "EXPLAIN ANALYZE (SELECT 1); SELECT 2").startswith("refused: 2 ")
    with pytest.raises(QueryRefusedError, match="^refused: EXPLAIN inside EXPLAIN$"):
        check_read_only(con, "EXPLAIN SELECT 1", _wrapper="EXPLAIN")  # the parser refuses it first
    with pytest.raises(QueryRefusedError, match="^refused: EXPLAIN wraps no statement"):
        check_read_only(con, "", _wrapper="EXPLAIN")
    assert refused(con, "EXPLAIN (FORMAT json) PREPARE p AS SELECT 1").startswith(
        "refused: EXPLAIN wraps PREPARE:")


def test_syntax_error_is_one_line(con):
    assert refused(con, "SELEC 1").startswith("SQL error: Parser Error")


@pytest.mark.parametrize("text, wrapped", [
    ("EXPLAIN SELECT 1", "SELECT 1"),
    ("explain analyze SELECT 1", "SELECT 1"),
    ("EXPLAIN ANALYSE SELECT 1", "SELECT 1"),
    ("EXPLAIN (FORMAT json) SELECT 2", "SELECT 2"),
    ("EXPLAIN ANALYZE (FORMAT json, ANALYZE) SELECT 3", "SELECT 3"),
    ("EXPLAIN ((FORMAT)) SELECT 4", "SELECT 4"),
    ("EXPLAIN (SELECT 5)", "(SELECT 5)"[1:] if False else ""),
    ("EXPLAIN -- c\n ANALYZE /* d */ COPY t TO 'x'", "COPY t TO 'x'"),
    ("EXPLAIN", ""),
    ("EXPLAIN (FORMAT json", ""),  # never closed: nothing is wrapped
    ("EXPLAIN ANALYZE", ""),
])
def test_explained(text, wrapped):
    assert _explained(text) == wrapped


def test_explained_needs_explain():
    with pytest.raises(QueryRefusedError, match="^refused: cannot tell what this EXPLAIN wraps; "
                                                "EXPLAIN a SELECT$"):
        _explained("SELECT 1")
    with pytest.raises(QueryRefusedError, match="cannot tell"):
        _explained("/* only */")


# ---- the connection -----------------------------------------------------------------

def test_connect_views_and_lockdown(cat, tmp_path):
    c = connect(cat)
    views = {r[0] for r in c.sql("SELECT table_name FROM duckdb_tables() UNION ALL "
                                 "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    arrow_views = {r[0] for r in c.sql("SHOW TABLES").fetchall()}
    assert set(table_names()) <= arrow_views | views
    assert c.sql("SELECT count(DISTINCT lang) FROM neurons").fetchall() == [(2,)]
    assert c.sql("SELECT count(*) FROM lape").fetchall() == [(0,)]  # no entry: empty, typed
    settings = dict(c.sql("SELECT name, value FROM duckdb_settings() WHERE name IN ("
                          "'enable_external_access', 'lock_configuration', 'temp_directory', "
                          "'autoinstall_known_extensions', 'autoload_known_extensions', "
                          "'allow_community_extensions', 'allow_unsigned_extensions', "
                          "'python_enable_replacements')").fetchall())
    assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                        "temp_directory": "", "autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false",
                        "allow_community_extensions": "false",
                        "allow_unsigned_extensions": "false",
                        "python_enable_replacements": "false"}
    with pytest.raises(duckdb.Error):
        c.execute("SET enable_external_access = true")
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(duckdb.PermissionException):
        c.sql(f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')").fetchall()
    c.close()


def test_connect_memory_limit(cat):
    c = connect(cat, limits=SqlLimits(memory_limit="123MB"))
    value = c.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert value.startswith("117") or value.startswith("123")  # MiB or MB as printed
    c.close()
    with pytest.raises(QueryError, match="^cannot open DuckDB .memory limit 'lots'.: .*[Mm]emory"):
        connect(cat, limits=SqlLimits(memory_limit="lots"))  # DuckDB's own reason follows


def test_connect_checks_footers(tmp_path):
    c = build_catalog(tmp_path / "catalog", ("npi_Deva",), counts=False)
    path = c.entry_path("neurons", {"model": "gemma-3-270m", "refset": "paper-12",
                                    "selection": SELECTION})
    path.write_bytes(b"not parquet at all")
    with pytest.raises(SchemaError, match="corrupt Parquet file"):
        connect(c)
    connect(c, check=False).close()  # the footer is not read until a scan


# ---- limits and error mapping -------------------------------------------------------

def test_timeout_interrupts_duckdb(con):
    t0 = time.monotonic()
    with pytest.raises(QueryError, match=r"query stopped after 0.3 s, the time limit"):
        _limited(con, SqlLimits(timeout_s=0.3), lambda: con.sql(
            "SELECT sum(hash(i)) FROM range(100000000000) t(i)").fetchall())
    assert time.monotonic() - t0 < 8


def test_stuck_outside_duckdb(con, monkeypatch):
    monkeypatch.setattr(query, "_GRACE_S", 0.2)
    with pytest.raises(QueryError, match="time limit"):
        _limited(con, SqlLimits(timeout_s=0.2), lambda: time.sleep(3))


def test_value_and_close(con):
    assert _limited(con, SqlLimits(), lambda: 42) == 42
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")  # closed afterwards


def raise_(e):
    def work():
        raise e
    return work


@pytest.mark.parametrize("error, kind, match", [
    (duckdb.OutOfMemoryException("Out of Memory Error: x\nmore"), QueryError,
     r"^query stopped: it needs more than the memory limit 7MB \(Out of Memory Error: x\)"),
    (duckdb.PermissionException("Permission Error: no\nmore"), QueryRefusedError,
     r"^refused: Permission Error: no; lape-hub sql reads only the catalog's tables \("),
    (duckdb.InvalidInputException("Invalid Input Error: parquet file is corrupt"), SchemaError,
     r"^Invalid Input Error: parquet file is corrupt$"),
    (duckdb.IOException("IO Error: not a Parquet file (magic bytes)"), SchemaError, "magic"),
    (duckdb.IOException("IO Error: parquet reader failed"), QueryError,
     r"^SQL error: IO Error: parquet reader failed$"),
    (duckdb.IOException("IO Error: corrupt but not the format"), QueryError, "^SQL error"),
    (duckdb.ConversionException("Conversion Error: x"), QueryError, "^SQL error: Conversion"),
    (duckdb.InterruptException("INTERRUPT"), QueryError, "^query stopped after 60 s"),
    (pa.ArrowInvalid("bad file\nrest"), QueryError, r"^reading the catalog failed: bad file$"),
    (OSError(5, "Input/output error"), QueryError, "^reading the catalog failed"),
    (MemoryError(), QueryError, r"^out of memory while fetching the result \(memory limit 7MB\)"),
    (QueryRefusedError("refused: x"), QueryRefusedError, "^refused: x$"),
    (ZeroDivisionError("bug"), ZeroDivisionError, "bug"),
])
def test_errors_mapped(con, error, kind, match):
    with pytest.raises(kind, match=match) as info:
        _limited(con, SqlLimits(memory_limit="7MB"), raise_(error))
    assert type(info.value) is kind
    assert "\n" not in str(info.value)


def test_keyboard_interrupt_in_worker(con):
    with pytest.raises(KeyboardInterrupt):
        _limited(con, SqlLimits(), raise_(KeyboardInterrupt()))


class _Con:
    """A connection that records interrupt()/close() and may fail to close."""

    def __init__(self, close_error=None):
        self.calls, self.close_error = [], close_error

    def interrupt(self):
        self.calls.append("interrupt")

    def close(self):
        self.calls.append("close")
        if self.close_error:
            raise self.close_error


def _ctrl_c_then(after):
    """A query during which Ctrl-C reaches the main thread; then ``after()``."""
    import _thread

    def work():
        time.sleep(0.2)            # the main thread is waiting by now
        _thread.interrupt_main()   # SIGINT's KeyboardInterrupt, in the waiting main thread
        time.sleep(0.3)
        return after()
    return work


def test_ctrl_c_while_waiting_interrupts_the_query_and_raises_keyboard_interrupt():
    # DuckDB answers the interrupt with its InterruptException: that is the Ctrl-C, not a timeout
    con = _Con()
    with pytest.raises(KeyboardInterrupt):
        _limited(con, SqlLimits(), _ctrl_c_then(raise_(duckdb.InterruptException("INTERRUPT"))))
    assert con.calls == ["interrupt", "close"]


def test_ctrl_c_with_the_query_stuck_outside_duckdb(monkeypatch):
    monkeypatch.setattr(query, "_GRACE_S", 0.1)
    con = _Con()
    with pytest.raises(KeyboardInterrupt):
        _limited(con, SqlLimits(), _ctrl_c_then(lambda: time.sleep(1)))
    assert con.calls == ["interrupt"]   # left behind, not closed under its feet
    time.sleep(1)                       # the worker thread ends before the next test


def test_a_timed_out_query_failing_otherwise_is_still_a_timeout():
    # the interrupt can surface as another DuckDB error; what stopped the query was the limit
    con = _Con()
    with pytest.raises(QueryError, match=r"^query stopped after 0.1 s, the time limit"):
        _limited(con, SqlLimits(timeout_s=0.1), lambda: time.sleep(0.4) or raise_(
            duckdb.ConversionException("Conversion Error: x"))())
    assert con.calls == ["interrupt", "close"]


def test_a_connection_busy_at_close_is_not_an_error():
    con = _Con(close_error=duckdb.ConnectionException("Connection Error: busy"))
    assert _limited(con, SqlLimits(), lambda: 7) == 7
    assert con.calls == ["close"]


def test_permission_refusal_names_every_table(con):
    with pytest.raises(QueryRefusedError) as info:
        _limited(con, SqlLimits(), raise_(duckdb.PermissionException("Permission Error: no")))
    assert str(info.value) == ("refused: Permission Error: no; lape-hub sql reads only the "
                               f"catalog's tables ({', '.join(table_names())})")


def test_first_line_of_an_empty_message():
    assert query._first_line(ValueError("")) == "ValueError"
    assert query._first_line(ValueError("  \n a\nb")) == "a"


# ---- results per format -------------------------------------------------------------

def test_result_table_and_run_sql(cat):
    t = result_table(cat, "SELECT lang, count(*) AS n FROM neurons GROUP BY lang ORDER BY lang")
    assert t.column_names == ["lang", "n"]
    assert t.column("lang").to_pylist() == sorted(LANGS)
    rel = run_sql(cat, "SELECT 1 AS one")
    assert rel.fetchall() == [(1,)]
    limit = result_table(cat, "SELECT current_setting('memory_limit') AS m",
                         limits=SqlLimits(memory_limit="123MB")).column("m")[0].as_py()
    assert limit.startswith(("117", "123"))  # the limits reach the connection
    with pytest.raises(QueryRefusedError):
        result_table(cat, "DROP TABLE neurons")


def test_run_sql_result_is_locked_and_in_memory(cat, tmp_path, monkeypatch):
    """The relation run_sql returns lives on a connection that opens no file either."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("a\n1\n")
    rel = run_sql(cat, "SELECT 1 AS one")
    with pytest.raises(duckdb.PermissionException):
        rel.query("r", f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')").fetchall()
    with pytest.raises(duckdb.Error, match="Cannot change configuration"):
        rel.query("r", "SET enable_external_access = true").fetchall()
    assert rel.query("r", "SELECT current_setting('lock_configuration')").fetchall() == [(True,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]  # no database file
    with pytest.raises(QueryError, match="time limit"):
        run_sql(cat, "SELECT sum(hash(i)) FROM range(100000000000) t(i)",
                limits=SqlLimits(timeout_s=0.3))


def test_statement_kinds_are_types_not_first_words(con):
    assert refused(con, "WITH a AS (SELECT 1) SELECT * FROM a; FROM range(2)").startswith(
        "refused: 2 statements (SELECT, SELECT);")


def test_json_rows(cat):
    t = result_table(cat, "SELECT 1 AS a, [1, 2] AS b, 'x' AS a", "json")
    assert t.column_names == ["json"]
    assert json.loads(t.column("json")[0].as_py()) == {"a": "x", "b": [1, 2]} or \
        json.loads(t.column("json")[0].as_py())["b"] == [1, 2]


def test_csv_conversions(cat):
    t = result_table(cat, "SELECT [1, 2] AS l, {'k': 1} AS s, INTERVAL 2 DAY AS i, "
                          "42 AS n, 'txt' AS v, DATE '2024-01-02' AS d", "csv")
    assert t.column_names == ["l", "s", "i", "n", "v", "d"]
    assert t.column("l").to_pylist() == ["[1,2]"]
    assert t.column("s").to_pylist() == ['{"k":1}']
    assert t.column("i").to_pylist() == ["2 days"]
    assert t.column("n").type == pa.int32() and t.column("d").type == pa.date32()


def test_parquet_conversions_and_names(cat):
    t = result_table(cat, "SELECT 1 AS a, 2 AS a, 3 AS a_1, 4 AS a, INTERVAL 1 HOUR AS i, "
                          "[1] AS l", "parquet")
    assert t.column_names == ["a", "a_2", "a_1", "a_3", "i", "l"]
    assert [c.to_pylist()[0] for c in t.columns[:4]] == [1, 2, 3, 4]
    assert t.column("i").to_pylist() == ["01:00:00"]
    assert t.column("l").type == pa.list_(pa.int32())  # held as it is


def test_for_format_keeps_a_holdable_relation(con):
    rel = con.sql("SELECT 1 AS a, 'x' AS b")
    assert _for_format(rel, "parquet") is rel
    assert _for_format(rel, "csv") is rel
    assert _for_format(con.sql('SELECT 1 AS "we""ird"'), "csv").columns == ['we"ird']
    quoted = _for_format(con.sql('SELECT 1 AS "q""", 2 AS "q"""'), "parquet")
    assert quoted.columns == ['q"', 'q"_1'] and quoted.fetchall() == [(1, 2)]


def test_render_table(cat):
    out = render_table(cat, "SELECT range AS k FROM range(50)", max_rows=6)
    assert "k" in out and "50 rows" in out and " 0 " in out and " 49 " in out
    assert " 25 " not in out
    wide_long = "SELECT range AS k, repeat('x', 300) AS w FROM range(100)"
    assert render_table(cat, wide_long) == render_table(cat, wide_long, max_rows=40,
                                                        max_width=200)  # the defaults
    assert render_table(cat, wide_long) != render_table(cat, wide_long, max_rows=41)
    assert render_table(cat, wide_long) != render_table(cat, wide_long, max_width=201)
    limited = render_table(cat, "SELECT current_setting('memory_limit') AS m",
                           limits=SqlLimits(memory_limit="123MB"))
    assert "117" in limited or "123" in limited  # the limits reach the connection
    with duckdb.connect() as c:
        want = "\n".join(v for _, v in c.sql("EXPLAIN SELECT 1").fetchall()) + "\n"
    assert render_table(cat, "EXPLAIN SELECT 1") == want  # the plan as DuckDB draws it
    plan = render_table(cat, "EXPLAIN SELECT 1")
    assert "PROJECTION" in plan.upper() and "explain_key" not in plan
    width = [max(map(len, render_table(cat, "SELECT repeat('x', 300) AS w, 1 AS z",
                                       max_width=w).splitlines())) for w in (60, 200)]
    assert width[0] < width[1] <= 200


def test_json_lines_nan():
    t = pa.table({"json": ['{"a":NaN,"b":"é"}', '{"c":Infinity}', '{"d":1}']})
    assert _json_lines(t) == '{"a":"NaN","b":"é"}\n{"c":"Infinity"}\n{"d":1}\n'
    assert _json_lines(pa.table({"json": pa.array([], pa.string())})) == ""


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_write_result_path_and_stream(cat, tmp_path, fmt):
    t = result_table(cat, "SELECT range AS k, 'é' AS s FROM range(3)", fmt)
    path = tmp_path / f"out.{fmt}"
    assert write_result(t, fmt, path) == 3
    buf = io.BytesIO()
    assert write_result(t, fmt, buf) == 3
    assert buf.getvalue() == path.read_bytes()
    if fmt == "parquet":
        assert pq.read_table(path).column("k").to_pylist() == [0, 1, 2]
    elif fmt == "json":
        assert [json.loads(x)["k"] for x in path.read_text().splitlines()] == [0, 1, 2]
    else:
        assert path.read_text().splitlines()[0] == '"k","s"'
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{fmt}"]  # no temp file left


def test_write_result_errors(tmp_path):
    t = pa.table({"a": [1]})
    with pytest.raises(QueryError, match="unknown result format 'xml'"):
        write_result(t, "xml", io.BytesIO())
    (tmp_path / "afile").write_text("")
    with pytest.raises(QueryError, match=r"^cannot write .*afile.x\.csv: [A-Z][a-z ]+$"):
        write_result(t, "csv", tmp_path / "afile" / "x.csv")  # strerror, not the errno
    nested = pa.table({"l": [[1, 2]]})
    with pytest.raises(QueryError, match="^cannot write the result as csv: .*Unsupported Type"):
        write_result(nested, "csv", io.BytesIO())
    assert not (tmp_path / "x").exists()

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(28, "No space left on device")

    with pytest.raises(QueryError, match="^cannot write the output: No space left"):
        write_result(pa.table({"json": ['{"a":1}']}), "json", Full())

    class Broken(Full):
        def write(self, b):
            raise BrokenPipeError(32, "Broken pipe")

    class Gone(Full):
        def write(self, b):
            raise OSError("device gone\nmore")  # no errno, no strerror

    with pytest.raises(QueryError, match="^cannot write the output: device gone$"):
        write_result(pa.table({"json": ['{"a":1}']}), "json", Gone())

    with pytest.raises(BrokenPipeError):
        write_result(pa.table({"json": ['{"a":1}']}), "json", Broken())


def test_entry_file(cat, tmp_path):
    path = entry_file(cat, "neurons", model="gemma-3-270m", refset="paper-12",
                      selection=SELECTION)
    assert path.is_file() and path == cat.entry_path(
        "neurons", {"model": "gemma-3-270m", "refset": "paper-12", "selection": SELECTION})
    c = build_catalog(tmp_path / "c2", ("npi_Deva",), counts=False)
    p2 = c.entry_path("neurons", {"model": "gemma-3-270m", "refset": "paper-12",
                                  "selection": SELECTION})
    p2.write_bytes(b"PAR1")
    with pytest.raises(SchemaError, match="corrupt Parquet"):
        entry_file(Catalog(tmp_path / "c2"), "neurons", model="gemma-3-270m",
                   refset="paper-12", selection=SELECTION)
