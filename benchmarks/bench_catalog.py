"""Catalog speed, side by side in one run (ratios, never absolute targets in tests).

1. ``lape-hub fetch`` wall time on the local catalog vs ``python -c "import duckdb, pyarrow"``
   (target: ratio <= 2.0): the CLI's own cost above its two unavoidable imports.
2. The overlap matrix over 204 languages (synthetic neuron sets of ~3,000 neurons each on a
   32 × 14336 model) vs one DuckDB ``SELECT count(*)`` over the same neurons table
   (target: < 2×), both in-process, plus both as CLI commands.

    python benchmarks/bench_catalog.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def side_by_side(named: dict[str, callable], repeats: int) -> dict[str, float]:
    """Alternate the candidates each round; report medians."""
    times: dict[str, list[float]] = {k: [] for k in named}
    for _ in range(repeats):
        for k, f in named.items():
            times[k].append(f())
    return {k: statistics.median(v) for k, v in times.items()}


def synthetic_catalog(root: Path, n_langs: int = 204, per_lang: int = 3000, seed: int = 0):
    from lape_hub.catalog import Catalog
    from lape_hub.formats import neurons_entry
    from lape_hub.languages import all_languages
    from lape_hub.neuron_set import NeuronSet
    from lape_hub.registry import resolve_model

    spec = resolve_model("llama-3.1-8b")
    rng = np.random.default_rng(seed)
    # Like LAPE output: every set is drawn from the selected top 5 % of the model's neurons
    # (22,938 of 458,752), upper layers holding more of them.
    n_total = spec.n_layers * spec.d_ffn
    weights = np.repeat(np.linspace(0.5, 2.0, spec.n_layers), spec.d_ffn)
    pool = rng.choice(n_total, size=round(0.05 * n_total), replace=False,
                      p=weights / weights.sum())
    sets = []
    for lang in [x.code for x in all_languages()][:n_langs]:
        size = int(rng.integers(per_lang // 3, 2 * per_lang - per_lang // 3))
        gids = np.sort(rng.choice(pool, size, replace=False))
        layers = [gids[gids // spec.d_ffn == i] % spec.d_ffn for i in range(spec.n_layers)]
        sets.append(NeuronSet(spec.alias, lang, layers, d_model=spec.d_model, d_ffn=spec.d_ffn,
                              refset="flores-200"))
    cat = Catalog(root)
    cat.write("neurons", neurons_entry(sets, revision="main", selection="top0.05-f0.95-b0.95",
                                       signature="synthetic", params={"synthetic": True}))
    return cat, sum(s.n_neurons for s in sets)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    exe = str(Path(sys.executable).parent / "lape-hub")
    env = dict(os.environ)
    env.pop("LAPE_HUB_CATALOG", None)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ne.parquet")
        med = side_by_side({
            "import duckdb, pyarrow": lambda: wall([sys.executable, "-c", "import duckdb, pyarrow"]),
            "lape-hub fetch": lambda: wall([exe, "fetch", "--model", "llama-3.1-8b", "--lang", "ne",
                                            "-o", out], env),
        }, args.repeats)
        r1 = med["lape-hub fetch"] / med["import duckdb, pyarrow"]
        print("## fetch on the local catalog (llama-3.1-8b · ne)")
        for k, v in med.items():
            print(f"  {k:<28s} {1000 * v:8.1f} ms (median of {args.repeats})")
        print(f"  ratio fetch / imports: {r1:.2f}  (target <= 2.0: {'met' if r1 <= 2 else 'MISSED'})")

        import duckdb

        from lape_hub.overlap import overlap_matrix

        cat, n_rows = synthetic_catalog(Path(tmp) / "cat")
        path = next(cat.root.glob("neurons/**/data.parquet"))

        def count_star():
            con = duckdb.connect(":memory:")
            con.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()
            con.close()

        def overlap():
            overlap_matrix(cat, "llama-3.1-8b", refset="flores-200")

        overlap()  # warm the page cache and imports for both
        med2 = side_by_side({"SELECT count(*)": lambda: _t(count_star),
                             "overlap 204×204": lambda: _t(overlap)}, args.repeats)
        r2 = med2["overlap 204×204"] / med2["SELECT count(*)"]
        print(f"\n## overlap over 204 languages ({n_rows:,} neuron rows, 32 × 14336 model)")
        for k, v in med2.items():
            print(f"  {k:<28s} {1000 * v:8.1f} ms (median, in-process)")
        print(f"  ratio overlap / count(*): {r2:.2f}  (target < 2.0: {'met' if r2 < 2 else 'MISSED'})")
        cenv = dict(env, LAPE_HUB_CATALOG=str(cat.root))
        med3 = side_by_side({
            "lape-hub sql count(*)": lambda: wall([exe, "sql", "SELECT count(*) FROM neurons"], cenv),
            "lape-hub overlap": lambda: wall([exe, "overlap", "--model", "llama-3.1-8b", "--refset",
                                              "flores-200", "--format", "csv"], cenv),
        }, args.repeats)
        r3 = med3["lape-hub overlap"] / med3["lape-hub sql count(*)"]
        for k, v in med3.items():
            print(f"  {k:<28s} {1000 * v:8.1f} ms (median, as CLI commands)")
        print(f"  ratio as CLI commands: {r3:.2f}")


def _t(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
