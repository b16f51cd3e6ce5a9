"""lape_hub.output_paths in process (issue 14): every refusal's exact line, every accepted
path's return value, the protected folders, suffix/format agreement.

The CLI attack tests (tests/test_attacks_io.py) check the same rules end to end through a
subprocess, which mutmut cannot attribute; these call the functions directly. Expected
lines and folders are written out here from the rules, not taken from the code. The tests run
as root too: "not writable" is simulated by a fake ``os.access`` that denies named folders
(and records the mode asked for), since root passes every permission bit.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lape_hub import output_paths as op
from lape_hub.errors import OutputPathError
from lape_hub.output_paths import (NEURON_SET_SUFFIXES, QUERY_SUFFIXES, check_output_dir,
                                   check_output_file, protected_roots)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """The four protected folders in tmp_path (catalog, cache, registry, schemas), an
    ordinary work folder beside them, and the current folder moved into it."""
    roots = {}
    for name, env in [("catalog", "LAPE_HUB_CATALOG"), ("cache", "LAPE_HUB_CACHE"),
                      ("registry", "LAPE_HUB_REGISTRY"), ("schemas", "LAPE_HUB_SCHEMAS")]:
        roots[name] = tmp_path / name
        roots[name].mkdir()
        monkeypatch.setenv(env, str(roots[name]))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    roots["work"] = work
    return roots


def refused(fn, *args, **kw) -> str:
    with pytest.raises(OutputPathError) as exc:
        fn(*args, **kw)
    return str(exc.value)


@pytest.fixture
def deny(monkeypatch):
    """``deny(path, ...)``: these paths exist but are not writable: os.access answers False
    when asked for write permission on them; the modes asked are recorded in ``deny.asked``."""
    real = os.access
    denied: set[str] = set()
    asked: list[tuple[str, int]] = []

    def fake(p, mode, *a, **k):
        asked.append((os.fspath(p), mode))
        if os.fspath(p) in denied and mode & os.W_OK:
            return False
        return real(p, mode, *a, **k)

    monkeypatch.setattr(os, "access", fake)

    def add(*paths):
        denied.update(os.fspath(p) for p in paths)

    add.asked = asked
    return add


# -- protected folders ------------------------------------------------------------------

def test_protected_roots_are_the_four_folders_resolved(world, tmp_path):
    expect = [("the catalog", world["catalog"]), ("the lape-hub cache", world["cache"]),
              ("the registry", world["registry"]), ("the schemas", world["schemas"])]
    assert protected_roots() == expect
    other = tmp_path / "other-catalog"
    assert protected_roots(other)[0] == ("the catalog", other)  # need not exist
    assert protected_roots(str(other))[1:] == expect[1:]
    # relative, with .., and through a symlink: each is the real absolute folder
    (tmp_path / "link").symlink_to(world["catalog"])
    assert protected_roots("../link")[0] == ("the catalog", world["catalog"])
    assert protected_roots("../work/../catalog")[0] == ("the catalog", world["catalog"])


def test_protected_roots_expand_the_home_folder(world, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert protected_roots("~/catalog")[0] == ("the catalog", world["catalog"])


def test_protected_roots_without_a_cache(world, monkeypatch):
    from lape_hub import paths

    def no_cache():
        raise ModuleNotFoundError("No module named 'platformdirs'")

    monkeypatch.setattr(paths, "cache_dir", no_cache)
    assert [n for n, _ in protected_roots()] == ["the catalog", "the registry", "the schemas"]


def test_default_catalog_is_the_environment_one(world, tmp_path):
    line = refused(check_output_file, world["catalog"] / "x.json")
    assert line == (f"{world['catalog'] / 'x.json'}: refusing to write inside the catalog "
                    f"({world['catalog']}); choose a path outside it")


@pytest.mark.parametrize("root, name", [("catalog", "the catalog"), ("cache", "the lape-hub cache"),
                                        ("registry", "the registry"), ("schemas", "the schemas")])
def test_a_file_inside_each_protected_folder_is_refused(world, root, name):
    deep = world[root] / "a" / "b.json"
    (world[root] / "a").mkdir()
    line = refused(check_output_file, deep, catalog_root=world["catalog"])
    assert line == (f"{deep}: refusing to write inside {name} ({world[root]}); "
                    "choose a path outside it")
    # the folder itself, as an output folder (created or existing)
    line = refused(check_output_dir, world[root], create=True)
    assert line == (f"{world[root]}: refusing to write inside {name} ({world[root]}); "
                    "choose a path outside it")


def test_the_catalog_in_use_is_protected_not_the_default_one(world, tmp_path):
    other = tmp_path / "other-catalog"
    (other / "neurons").mkdir(parents=True)
    line = refused(check_output_file, other / "neurons" / "x.json", catalog_root=other)
    assert line == (f"{other / 'neurons' / 'x.json'}: refusing to write inside the catalog "
                    f"({other}); choose a path outside it")
    line = refused(check_output_dir, other / "out", create=True, catalog_root=other)
    assert line == (f"{other / 'out'}: refusing to write inside the catalog ({other}); "
                    "choose a path outside it")
    line = refused(check_output_dir, tmp_path, replaces=True, catalog_root=other)
    assert line == (f"{tmp_path}: refusing to replace a folder that holds the catalog "
                    f"({other}); choose another folder")
    # the environment's catalog is not the one in use here: writing there is allowed
    assert check_output_file(world["catalog"] / "x.json", catalog_root=other)[0] == \
        world["catalog"] / "x.json"
    assert check_output_dir(world["catalog"] / "o", create=True, catalog_root=other) == \
        world["catalog"] / "o"


def test_a_sibling_with_the_same_prefix_is_not_inside(world, tmp_path):
    near = tmp_path / "catalog2"
    near.mkdir()
    assert check_output_file(near / "x.json", formats=["json"]) == (near / "x.json", "json")
    assert check_output_dir(tmp_path / "catalog-out", create=True) == tmp_path / "catalog-out"


def test_a_symlink_into_the_catalog_is_refused(world):
    link = world["work"] / "out.json"
    link.symlink_to(world["catalog"] / "new.json")  # dangling: the target does not exist yet
    line = refused(check_output_file, link, formats=NEURON_SET_SUFFIXES)
    assert line == (f"{link}: refusing to write inside the catalog ({world['catalog']}); "
                    "choose a path outside it")
    assert link.is_symlink()


def test_a_relative_path_is_resolved_from_the_current_folder(world, monkeypatch):
    monkeypatch.chdir(world["catalog"])
    line = refused(check_output_file, "x.json")
    assert line == (f"x.json: refusing to write inside the catalog ({world['catalog']}); "
                    "choose a path outside it")


def test_a_replaced_folder_must_not_hold_a_protected_one(world, tmp_path, monkeypatch):
    # replaces=True: the folder would be deleted, so it must not contain any protected folder
    for holder in (tmp_path, tmp_path.parent):
        line = refused(check_output_dir, holder, replaces=True)
        assert line == (f"{holder}: refusing to replace a folder that holds the catalog "
                        f"({world['catalog']}); choose another folder")
    # without replaces, writing into a folder that holds the catalog is fine
    assert check_output_dir(tmp_path) == tmp_path
    # the cache alone in a folder: named as the cache
    only = tmp_path / "only-cache"
    (only / "c").mkdir(parents=True)
    monkeypatch.setenv("LAPE_HUB_CACHE", str(only / "c"))
    line = refused(check_output_dir, only, replaces=True)
    assert line == (f"{only}: refusing to replace a folder that holds the lape-hub cache "
                    f"({only / 'c'}); choose another folder")
    # a file never "holds" a folder: contains is for folders only
    assert check_output_file(only / "x.json")[0] == only / "x.json"


# -- output files -----------------------------------------------------------------------

def test_a_good_file_returns_the_expanded_path_and_format(world, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(world["work"]))
    got = check_output_file("~/sets.PT", formats=NEURON_SET_SUFFIXES)
    assert got == (world["work"] / "sets.PT", "pt") and isinstance(got[0], Path)
    assert check_output_file("rel.csv", formats=QUERY_SUFFIXES) == (Path("rel.csv"), "csv")
    assert check_output_file("r.ndjson", formats=QUERY_SUFFIXES) == (Path("r.ndjson"), "json")
    # no formats: no check, the given --format passes through (even None)
    assert check_output_file("x.anything") == (Path("x.anything"), None)
    assert check_output_file("x.anything", fmt="zzz") == (Path("x.anything"), "zzz")
    # a list of formats: each format is its own suffix
    assert check_output_file("a.png", formats=["png", "svg"]) == (Path("a.png"), "png")
    assert refused(check_output_file, "a.jpg", formats=["png", "svg"]) == (
        "a.jpg: suffix .jpg tells no format; use one of .png, .svg or --format")
    # an existing regular file may be replaced
    (world["work"] / "old.json").write_text("{}")
    assert check_output_file("old.json", formats=["json"]) == (Path("old.json"), "json")


@pytest.mark.parametrize("given", ["", "."])
def test_an_empty_path_is_refused(world, given):
    assert refused(check_output_file, given) == "empty output path"


def test_a_folder_is_not_a_file(world):
    (world["work"] / "d").mkdir()
    assert refused(check_output_file, "d", formats=["json"]) == "d is a folder; give a file name"
    line = refused(check_output_file, "new/", formats=["json"])
    assert line == "new/ names a folder (trailing '/'); give a file name"
    assert not (world["work"] / "new").exists()
    # a folder reached through a symlink is a folder too
    (world["work"] / "dl").symlink_to(world["work"] / "d")
    assert refused(check_output_file, "dl") == "dl is a folder; give a file name"


def test_a_pipe_is_not_a_regular_file(world):
    os.mkfifo(world["work"] / "p.json")
    line = refused(check_output_file, "p.json", formats=["json"])
    assert line == "p.json is not a regular file (device, pipe or socket)"
    line = refused(check_output_file, "/dev/null", formats=None)
    assert line == "/dev/null is not a regular file (device, pipe or socket)"


def test_a_dangling_symlink_outside_the_protected_folders_is_accepted(world, tmp_path):
    (world["work"] / "dangling.json").symlink_to(tmp_path / "nowhere.json")
    assert check_output_file("dangling.json", formats=["json"]) == (Path("dangling.json"), "json")


def test_an_unwritable_file_or_folder_is_refused(world, deny):
    f = world["work"] / "ro.json"
    f.write_text("{}")
    deny(f)
    assert refused(check_output_file, "ro.json", formats=["json"]) == "ro.json is not writable"
    assert (str(f), os.W_OK) in deny.asked
    sub = world["work"] / "sub"
    sub.mkdir()
    deny(sub)
    line = refused(check_output_file, "sub/x.json", formats=["json"])
    assert line == "sub/x.json: folder sub is not writable"
    assert (str(sub), os.W_OK | os.X_OK) in deny.asked


def test_a_parent_that_is_a_file_is_refused(world):
    (world["work"] / "plain").write_text("x")
    line = refused(check_output_file, "plain/x.json", formats=["json"])
    assert line == "plain/x.json: plain is not a folder"


def test_a_missing_parent_is_refused_or_left_to_the_command(world, deny):
    line = refused(check_output_file, "no/such/x.json", formats=["json"])
    assert line == "no/such/x.json: folder no/such does not exist; create it first"
    # create_parent: accepted when the nearest existing folder is writable (nothing created)
    got = check_output_file("no/such/x.json", formats=["json"], create_parent=True)
    assert got == (Path("no/such/x.json"), "json") and not (world["work"] / "no").exists()
    # ... refused when that folder is not writable (the one asked is the nearest: work/)
    deny(world["work"])
    line = refused(check_output_file, "no/such/x.json", formats=["json"], create_parent=True)
    assert line == f"no/such/x.json: cannot create folders under {world['work']} (not writable)"
    assert (str(world["work"]), os.W_OK | os.X_OK) in deny.asked


def test_a_missing_parent_under_a_file_is_refused(world):
    (world["work"] / "plain").write_text("x")
    line = refused(check_output_file, "plain/no/x.json", formats=["json"], create_parent=True)
    assert line == f"plain/no/x.json: {world['work'] / 'plain'} is not a folder"


def test_the_nearest_existing_folder_counts_a_dangling_symlink(world, tmp_path):
    (world["work"] / "ghost").symlink_to(tmp_path / "gone")
    assert op._nearest_existing(world["work"] / "ghost" / "a" / "b") == world["work"] / "ghost"
    assert op._nearest_existing(world["work"] / "x" / "y") == world["work"]
    assert op._nearest_existing(Path("/no-such-top-folder/x")) == Path("/")
    # through the checks, a dangling link is followed to where it points: tmp_path/gone/a/b
    assert check_output_dir("ghost/a/b", create=True) == Path("ghost/a/b")


def test_a_symlink_loop_is_one_line(world):
    """Found by these tests: on Python < 3.13 resolving a symlink loop raised RuntimeError
    (a traceback from every -o); now it is an OutputPathError."""
    import sys

    (world["work"] / "loop").symlink_to("loop")
    if sys.version_info < (3, 13):
        assert refused(check_output_file, "loop") == "loop: a symlink loop; give another path"
        assert refused(check_output_dir, "loop/x", create=True) == (
            "loop/x: a symlink loop; give another path")
    else:  # resolved as the link itself: it exists as a link only
        assert refused(check_output_dir, "loop", create=True) == (
            "loop is a broken symlink; give a folder")


# -- suffix and --format ------------------------------------------------------------------

def test_format_from_the_suffix_any_case(world):
    for name, fmt in [("a.parquet", "parquet"), ("a.PQ", "parquet"), ("a.Json", "json"),
                      ("a.pth", "pt"), ("a.pt", "pt")]:
        assert check_output_file(name, formats=NEURON_SET_SUFFIXES) == (Path(name), fmt)
    for name, fmt in [("q.jsonl", "json"), ("q.csv", "csv"), ("q.pq", "parquet")]:
        assert check_output_file(name, formats=QUERY_SUFFIXES) == (Path(name), fmt)


def test_format_agreeing_with_the_suffix(world):
    assert check_output_file("a.pth", formats=NEURON_SET_SUFFIXES, fmt="pt") == (Path("a.pth"), "pt")
    assert check_output_file("a.PQ", formats=NEURON_SET_SUFFIXES, fmt="parquet")[1] == "parquet"


def test_format_contradicting_the_suffix(world):
    line = refused(check_output_file, "x.json", formats=NEURON_SET_SUFFIXES, fmt="parquet")
    assert line == "x.json ends in .json but --format is parquet; use a .parquet name or --format json"
    line = refused(check_output_file, "x.pth", formats=NEURON_SET_SUFFIXES, fmt="json")
    assert line == "x.pth ends in .pth but --format is json; use a .json name or --format pt"
    line = refused(check_output_file, "x.csv", formats=QUERY_SUFFIXES, fmt="json")
    assert line == "x.csv ends in .csv but --format is json; use a .json name or --format csv"


def test_format_with_a_suffix_that_names_none(world):
    line = refused(check_output_file, "x.txt", formats=NEURON_SET_SUFFIXES, fmt="pt")
    assert line == "x.txt: suffix .txt does not match --format pt; use a .pt name"
    # no suffix at all: the --format decides
    assert check_output_file("plain", formats=NEURON_SET_SUFFIXES, fmt="pt") == (Path("plain"), "pt")


def test_suffix_suggested_for_a_format_whose_name_is_no_suffix():
    formats = {"pq": "parquet", "parq": "parquet", "tsv": "table", "txt": "table"}
    assert op._suffix_for("parquet", formats) == "pq"  # the first suffix of that format
    assert op._suffix_for("table", formats) == "tsv"
    assert op._suffix_for("parquet", {**formats, "parquet": "parquet"}) == "parquet"
    # a suffix named like the format but meaning another one is not suggested for it
    assert op._suffix_for("csv", {"csv": "table", "c": "csv"}) == "c"


def test_suggested_suffix_in_the_messages(world):
    formats = {"pq": "parquet", "parq": "parquet", "json": "json"}
    line = refused(check_output_file, "x.json", formats=formats, fmt="parquet")
    assert line == "x.json ends in .json but --format is parquet; use a .pq name or --format json"
    line = refused(check_output_file, "x.bin", formats=formats, fmt="parquet")
    assert line == "x.bin: suffix .bin does not match --format parquet; use a .pq name"


def test_unknown_format(world):
    line = refused(check_output_file, "x.json", formats=NEURON_SET_SUFFIXES, fmt="xml")
    assert line == "unknown format 'xml'; choose from json, parquet, pt"
    # a suffix is not a format: pq is a suffix of parquet, not a --format
    line = refused(check_output_file, "x.pq", formats=NEURON_SET_SUFFIXES, fmt="pq")
    assert line == "unknown format 'pq'; choose from json, parquet, pt"


def test_no_format_told(world):
    line = refused(check_output_file, "x.txt", formats=NEURON_SET_SUFFIXES)
    assert line == "x.txt: suffix .txt tells no format; use one of .json, .parquet, .pq, .pt, .pth or --format"
    line = refused(check_output_file, "noext", formats=QUERY_SUFFIXES)
    assert line == ("noext: a name without a suffix tells no format; use one of .csv, .json, "
                    ".jsonl, .ndjson, .parquet, .pq or --format")


# -- output folders -----------------------------------------------------------------------

def test_an_existing_or_new_folder_is_returned_unchanged(world, monkeypatch):
    (world["work"] / "out").mkdir()
    assert check_output_dir("out") == Path("out")
    assert check_output_dir("new/deeper", create=True) == Path("new/deeper")
    assert not (world["work"] / "new").exists()  # nothing is created here
    monkeypatch.setenv("HOME", str(world["work"]))
    assert check_output_dir("~/out") == world["work"] / "out"


def test_an_empty_folder_name_is_refused(world):
    assert refused(check_output_dir, "") == "empty output folder"


def test_a_missing_folder_needs_create(world):
    assert refused(check_output_dir, "missing") == "folder missing does not exist; create it first"


def test_a_file_is_not_a_folder(world):
    (world["work"] / "f").write_text("x")
    assert refused(check_output_dir, "f") == "f is a file; give a folder"
    assert refused(check_output_dir, "f", create=True, replaces=True) == "f is a file; give a folder"
    line = refused(check_output_dir, "f/sub", create=True)
    assert line == f"f/sub: {world['work'] / 'f'} is not a folder"


def test_an_unwritable_folder_is_refused(world, deny):
    (world["work"] / "ro").mkdir()
    deny(world["work"] / "ro")
    assert refused(check_output_dir, "ro") == "folder ro is not writable"
    assert (str(world["work"] / "ro"), os.W_OK | os.X_OK) in deny.asked
    line = refused(check_output_dir, "ro/a/b", create=True)
    assert line == f"ro/a/b: cannot create folders under {world['work'] / 'ro'} (not writable)"


def test_a_replaced_folder_needs_its_marker(world):
    d = world["work"] / "model"
    d.mkdir()
    # empty: accepted whatever the marker
    assert check_output_dir("model", replaces=True, marker="config.json") == Path("model")
    (d / "thesis.tex").write_text("years of work")
    expect = ("folder model is not empty and has no config.json: it is not a folder this "
              "command wrote; it would be replaced, so give an empty or new folder")
    assert refused(check_output_dir, "model", replaces=True, marker="config.json") == expect
    # the marker must be a regular file: a folder or a symlink named like it does not count
    (d / "config.json").mkdir()
    assert refused(check_output_dir, "model", replaces=True, marker="config.json") == expect
    (d / "config.json").rmdir()
    (d / "config.json").symlink_to(d / "thesis.tex")
    assert refused(check_output_dir, "model", replaces=True, marker="config.json") == expect
    (d / "config.json").unlink()
    (d / "config.json").write_text("{}")
    assert check_output_dir("model", replaces=True, marker="config.json") == Path("model")
    # without replaces, or without a marker, the content is not looked at
    (d / "config.json").unlink()
    assert check_output_dir("model", marker="config.json") == Path("model")
    assert check_output_dir("model", replaces=True) == Path("model")
