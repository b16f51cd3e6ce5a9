#!/usr/bin/env python
"""Mutation-test one core module of lape-hub with mutmut, within a stated time.

A copy of the working tree is made in a temporary folder (the checkout itself is never
touched), mutmut is configured there to mutate only the chosen module and to run only the
tests that cover it, and the run stops after ``--minutes``. The summary counts killed and
surviving mutants and names every survivor, so each one can be killed by a new test or
explained in docs/testing.md (equivalent mutant or accepted risk).

Example::

    python scripts/mutation.py lape              # lape_hub/lape.py with tests/test_lape.py
    python scripts/mutation.py atomic --minutes 10 --json docs/mutation/atomic.json
    python scripts/mutation.py lape_hub/query.py --tests tests/test_attacks_sql.py
    python scripts/mutation.py --list            # the modules and the tests mapped to them

Needs ``pip install mutmut`` (in the ``dev`` extra). It is not part of ``.ci/run``: a core
module takes minutes to an hour on two cores; docs/testing.md records the latest figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# module -> the test files that exercise it (what mutmut runs for each mutant)
MODULE_TESTS: dict[str, list[str]] = {
    "lape": ["tests/test_lape.py"],
    "activation_counts": ["tests/test_mut_activation_counts.py", "tests/test_activation_counts.py"],
    "ffn": ["tests/test_ffn_edges.py", "tests/test_ffn.py"],
    "query": ["tests/test_query_guard.py"],  # in process; test_attacks_sql.py adds minutes
    "catalog": ["tests/test_catalog.py", "tests/test_catalog_paths.py",
                "tests/test_builder_catalog.py", "tests/test_catalog_edges.py"],  # 7 s together
    "atomic": ["tests/test_atomic.py"],
    "schemas": ["tests/test_schemas.py", "tests/test_catalog.py"],
    "sparse_adapter": ["tests/test_mut_sparse_adapter.py", "tests/test_sparse_adapter.py"],
    "finetune": ["tests/test_mut_finetune.py", "tests/test_finetune.py"],  # slow end-to-end runs deselected below
    "publisher": ["tests/test_mut_publisher.py", "tests/test_publisher.py",
                  "tests/test_attacks_publish.py"],
    "overlap": ["tests/test_overlap.py"],
    "config": ["tests/test_config.py"],
    "output_paths": ["tests/test_mut_output_paths.py"],  # in process; test_attacks_io.py runs the CLI
    "hub_files": ["tests/test_mut_hub_files.py"],  # in process, the fake Hub on loopback
    "formats": ["tests/test_cli_read.py", "tests/test_attacks_io.py"],
    "languages": ["tests/test_languages.py", "tests/test_registry.py"],
    "signature": ["tests/test_signature_digest_edges.py"],
    "digest": ["tests/test_signature_digest_edges.py"],
    # evaluation package: the in-process files (test_evaluation.py's CLI tests deselected below)
    "evaluation.significance": ["tests/test_mut_evaluation.py", "tests/test_evaluation.py", "tests/test_evaluation_cards.py"],
    "evaluation.results": ["tests/test_mut_evaluation.py", "tests/test_evaluation.py", "tests/test_evaluation_cards.py"],
    "evaluation.translation": ["tests/test_mut_evaluation.py", "tests/test_evaluation.py"],
    "evaluation.topic": ["tests/test_mut_evaluation.py", "tests/test_evaluation.py"],
    "evaluation.perplexity": ["tests/test_mut_evaluation.py", "tests/test_evaluation.py"],
    "evaluation.tasks": ["tests/test_mut_evaluation.py", "tests/test_evaluation.py"],
    "evaluation.evaluator": ["tests/test_mut_evaluation.py", "tests/test_evaluation.py"],
}

#: pytest arguments added to a module's default run: mostly deselecting tests that run the code
#: in a subprocess (mutmut cannot see which mutant they exercise, and they are slow)
_EVAL_CLI = ["--deselect", "tests/test_evaluation.py::test_cli_eval_and_compare",
             "--deselect", "tests/test_evaluation.py::test_cli_bad_input_is_one_line"]
MODULE_PYTEST_ARGS: dict[str, list[str]] = {
    # finetune: four whole runs (7, 6, 3 and 2 s) that no helper-level mutant needs; the decay,
    # best-checkpoint and resume tests stay
    "finetune": ["--deselect", "tests/test_finetune.py::test_sparse_run_end_to_end",
                 "--deselect", "tests/test_finetune.py::test_deterministic_with_a_seed",
                 "--deselect", "tests/test_finetune.py::test_bf16_autocast_tracks_float32_for_20_steps",
                 "--deselect", "tests/test_finetune.py::test_finetune_eval_tasks_evaluate_the_saved_adapter_once"],
    # SIGKILL-resume and torchrun run the counting in subprocesses (slow, invisible to mutmut)
    "activation_counts": ["--deselect", "tests/test_activation_counts.py::test_sigkill_and_resume_gives_identical_counts",
                          "--deselect", "tests/test_activation_counts.py::test_torchrun_two_processes_equal_one"],
    # the three run `python -m lape_hub.cli list/overlap` in a subprocess (no publisher code)
    "publisher": ["--deselect", "tests/test_attacks_publish.py::test_a_pipe_in_the_catalog_does_not_hang_a_reader",
                  "--deselect", "tests/test_attacks_publish.py::test_damaged_files_through_the_real_entry_point"],
    # evaluation: the two CLI tests run `python -m lape_hub.cli eval/compare` in a subprocess (22 s)
    "evaluation.significance": _EVAL_CLI,
    "evaluation.results": _EVAL_CLI,
    "evaluation.translation": _EVAL_CLI,
    "evaluation.topic": _EVAL_CLI,
    "evaluation.perplexity": _EVAL_CLI,
    "evaluation.tasks": _EVAL_CLI,
    "evaluation.evaluator": _EVAL_CLI,
}


def resolve(module: str) -> tuple[str, str]:
    """``lape`` / ``lape_hub/lape.py`` / ``lape_hub.lape`` -> (name, path); a subpackage's
    module is named with its package: ``evaluation.significance``."""
    rel = module[:-3] if module.endswith(".py") else module
    rel = rel.replace("/", ".").replace("\\", ".")
    name = rel.removeprefix("lape_hub.")
    path = "lape_hub/" + name.replace(".", "/") + ".py"
    if not (REPO / path).exists():
        sys.exit(f"error: no module {path}")
    return name, path


def copy_tree(dest: Path) -> None:
    """The files git would see (tracked + untracked, not ignored), copied to ``dest``."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                         check=True, capture_output=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def write_config(work: Path, path: str, tests: list[str], pytest_args: list[str] = ()) -> None:
    lines = ["[mutmut]", "source_paths=lape_hub", f"only_mutate={path}",
             "pytest_add_cli_args_test_selection=", *[f"    {t}" for t in tests],
             "pytest_add_cli_args=", "    -x", "    -q", "    -p", "    no:cacheprovider",
             *[f"    {a}" for a in pytest_args],
             "also_copy=", "    registry", "    schemas", "    catalog", "    tests", ""]
    (work / "setup.cfg").write_text("\n".join(lines))


def summarize(work: Path, path: str) -> dict:
    """Read mutmut's per-file meta data: counts per status and the survivors' names."""
    meta = work / "mutants" / (path + ".meta")
    if not meta.exists():
        return {"module": path, "error": "mutmut produced no results (see its output above)"}
    os.chdir(work)  # mutmut reads its configuration from the working folder on import
    from mutmut.stats import status_by_exit_code  # mutmut's own exit code -> status table

    data = json.loads(meta.read_text())
    codes = data.get("exit_code_by_key", {})
    counts: dict[str, int] = {}
    survivors = []
    for key, code in sorted(codes.items()):
        status = status_by_exit_code[code]
        counts[status] = counts.get(status, 0) + 1
        if status == "survived":
            survivors.append(key)
    checked = sum(v for k, v in counts.items() if k != "not checked")
    return {"module": path, "mutants": len(codes), "checked": checked, "counts": counts,
            "survived": len(survivors),
            "survived_pct": round(100 * len(survivors) / checked, 1) if checked else None,
            "survivors": survivors}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("module", nargs="?", help="lape, lape_hub/lape.py or lape_hub.lape")
    ap.add_argument("--tests", nargs="+", help="test files to run (default: the module's map)")
    ap.add_argument("--minutes", type=float, default=20, help="stop the run after this long")
    ap.add_argument("--jobs", type=int, default=1, help="mutmut --max-children")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (mutmut browse)")
    ap.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                    help="one more pytest argument, repeatable (e.g. --pytest-arg=--deselect "
                         "--pytest-arg=tests/test_x.py::test_subprocess)")
    ap.add_argument("--list", action="store_true", help="print the module -> tests map")
    ap.add_argument("--only", nargs="+", metavar="FUNCTION",
                    help="mutate only these functions (e.g. check_read_only, "
                         "'TableSchema.validate'): a big module in parts")
    args = ap.parse_args(argv)
    for opt in ("json", "keep"):  # the run works in another folder: relative paths mean from here
        if getattr(args, opt):
            setattr(args, opt, getattr(args, opt).resolve())
    if args.list:
        for name, tests in MODULE_TESTS.items():
            extra = " ".join(MODULE_PYTEST_ARGS.get(name, []))
            print(f"{name:18} {' '.join(tests)}" + (f"  [{extra}]" if extra else ""))
        return 0
    if not args.module:
        ap.error("name a module (or --list)")
    if shutil.which("mutmut") is None:
        sys.exit("error: mutmut is not installed: pip install mutmut")
    name, path = resolve(args.module)
    tests = args.tests or [t for t in MODULE_TESTS.get(name, []) if (REPO / t).exists()]
    if not tests:
        sys.exit(f"error: no tests mapped to {name}; pass --tests")
    work = args.keep or Path(tempfile.mkdtemp(prefix=f"mutmut-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_tree(work)
    pytest_args = [*MODULE_PYTEST_ARGS.get(name, []), *args.pytest_arg] if not args.tests \
        else args.pytest_arg
    write_config(work, path, tests, pytest_args)
    print(f"mutating {path} with {' '.join(tests)} in {work} (at most {args.minutes:g} min)",
          flush=True)
    t0 = time.time()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    try:
        # mutmut's mutant names: x_func__mutmut_N, xǁClassǁmethod__mutmut_N
        names = [f"lape_hub.{name}." + ("xǁ" + f.replace(".", "ǁ") if "." in f else f"x_{f}")
                 + "__mutmut_*" for f in args.only or []]
        subprocess.run(["mutmut", "run", "--max-children", str(args.jobs), *names], cwd=work, env=env,
                       timeout=args.minutes * 60, stdout=subprocess.DEVNULL)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    summary = summarize(work, path)
    summary.update(tests=tests, minutes=round((time.time() - t0) / 60, 1), finished=finished)
    print(json.dumps({k: v for k, v in summary.items() if k != "survivors"}, indent=1))
    for s in summary.get("survivors", []):
        print("survived:", s, f"(mutmut show {s})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    os.chdir(REPO)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
