"""Write docs/<model>.md from the catalog: neuron counts per language, per-layer
distribution, and the overlap of related vs unrelated languages. Everything is read from
the catalog (nothing hard-coded), so rerunning after a build refreshes the report.

    python scripts/report_catalog.py --model gemma-3-270m --refset paper-12 --refset flores-200 \\
        --verify-md paper-12=docs/gemma-3-270m.verify-paper-12.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lape_hub.catalog import Catalog
from lape_hub.languages import resolve_language
from lape_hub.overlap import overlap_matrix
from lape_hub.registry import resolve_model

# Pairs shown when both languages are in the refset (the paper's, then wider ones).
PAIRS_RELATED = [("slk_Latn", "slv_Latn"), ("lvs_Latn", "lit_Latn"), ("mkd_Cyrl", "slv_Latn"),
                 ("afr_Latn", "isl_Latn"), ("ces_Latn", "slk_Latn"), ("hrv_Latn", "bos_Latn"),
                 ("hrv_Latn", "srp_Cyrl"), ("hin_Deva", "urd_Arab"), ("spa_Latn", "por_Latn"),
                 ("glg_Latn", "por_Latn"), ("nob_Latn", "nno_Latn"), ("dan_Latn", "nob_Latn"),
                 ("zsm_Latn", "ind_Latn"), ("afr_Latn", "nld_Latn"), ("bel_Cyrl", "ukr_Cyrl"),
                 ("kaz_Cyrl", "kir_Cyrl"), ("tur_Latn", "azj_Latn"), ("arb_Arab", "arz_Arab"),
                 ("zho_Hans", "zho_Hant"), ("hin_Deva", "mar_Deva")]
PAIRS_UNRELATED = [("slk_Latn", "kat_Geor"), ("lvs_Latn", "npi_Deva"), ("mlt_Latn", "kat_Geor"),
                   ("cym_Latn", "est_Latn"), ("tur_Latn", "spa_Latn"), ("fin_Latn", "ind_Latn"),
                   ("eus_Latn", "swh_Latn"), ("hun_Latn", "por_Latn"), ("rus_Cyrl", "kaz_Cyrl"),
                   ("hin_Deva", "tam_Taml"), ("jpn_Jpan", "kor_Hang")]


def section(cat: Catalog, model: str, refset: str) -> list[str]:
    spec = resolve_model(model)
    avail = cat.neuron_sets_available(spec.alias)
    key = next((k for k in avail if k[0] == refset), None)
    if key is None:
        return [f"## refset `{refset}`", "", "Not built yet.", ""]
    langs = avail[key]
    sets = [cat.neuron_set(spec.alias, x, refset=refset) for x in langs]
    meta = sets[0].metadata
    params = meta["params"]
    out = [f"## refset `{refset}` ({len(langs)} languages)", "",
           f"Signature: `{meta['signature']}`  ",
           f"Thresholds used: tau_filter = {params.get('tau_filter', float('nan')):.4f}, "
           f"tau_bar = {params.get('tau_bar', float('nan')):.4f}; "
           f"{params.get('n_selected', '?')} neurons kept of {spec.n_neurons:,} "
           f"(top_rate {params.get('top_rate')}).", "",
           "| language | name | neurons | trainable params | share of model | tokens counted |",
           "|---|---|---:|---:|---:|---:|"]
    tokens = params.get("n_tokens", {})
    for ns in sorted(sets, key=lambda s: (-s.n_neurons, s.lang)):
        out.append(f"| {ns.lang} | {resolve_language(ns.lang).name} | {ns.n_neurons:,} | "
                   f"{ns.trainable_params / 1e6:.2f}M | {100 * ns.share:.2f} % | "
                   f"{tokens.get(ns.lang, 0):,} |")
    sizes = np.array([s.n_neurons for s in sets])
    empty = sorted(s.lang for s in sets if s.n_neurons == 0)
    out += ["", f"Neurons per language: median {np.median(sizes):,.0f}, "
            f"range {sizes.min():,}–{sizes.max():,}. Languages with an empty set: "
            f"{len(empty)}" + (f" ({', '.join(empty)})." if empty else ".")]
    per_layer = np.sum([s.per_layer for s in sets], axis=0)
    thirds = np.array_split(per_layer, 3)
    total = max(int(per_layer.sum()), 1)
    out += ["", "Per-layer distribution (all languages' memberships summed):", "", "```"]
    top = max(int(per_layer.max()), 1)
    for layer, c in enumerate(per_layer):
        out.append(f"L{layer:<3d} {'█' * int(round(40 * c / top)):<40s} {int(c)}")
    out += ["```", "",
            f"Lower / middle / upper third of the layers: "
            f"{100 * thirds[0].sum() / total:.0f} % / {100 * thirds[1].sum() / total:.0f} % / "
            f"{100 * thirds[2].sum() / total:.0f} %; the last layer alone: "
            f"{100 * per_layer[-1] / total:.0f} %.", ""]
    m = overlap_matrix(cat, spec.alias, refset=refset, metric="jaccard")
    c = overlap_matrix(cat, spec.alias, refset=refset, metric="count")
    rows = []
    for kind, pairs in (("related", PAIRS_RELATED), ("unrelated", PAIRS_UNRELATED)):
        for a, b in pairs:
            if a in m.langs and b in m.langs:
                rows.append(f"| {a} – {b} | {kind} | {int(c.value(a, b))} | {m.value(a, b):.3f} |")
    if rows:
        out += ["Overlap of related vs unrelated languages:", "",
                "| pair | relation | shared neurons | Jaccard |", "|---|---|---:|---:|", *rows, ""]
    vals = m.values[~np.eye(len(m.langs), dtype=bool)]
    out += [f"Mean pairwise Jaccard over all {len(m.langs)} languages: {vals.mean():.3f} "
            f"(max {vals.max():.3f}).", ""]
    if len(m.langs) > 12:
        out += grouped_overlap(m)
    return out


def grouped_overlap(m) -> list[str]:
    """Mean Jaccard of all pairs, grouped by whether they share a family and a script.

    Separates *language* neurons from *script* neurons: if sets were mostly script
    detectors, same-script pairs of different families would overlap as much as
    same-family pairs.
    """
    info = [resolve_language(x) for x in m.langs]
    vals = m.values
    groups: dict[str, list[float]] = {}
    for i in range(len(info)):
        for j in range(i + 1, len(info)):
            a, b = info[i], info[j]
            if a.iso639_3 == b.iso639_3:
                key = "same language, other script"
            else:
                fam = "same family" if a.family == b.family else "different family"
                scr = "same script" if a.script == b.script else "different script"
                key = f"{fam}, {scr}"
            groups.setdefault(key, []).append(float(vals[i, j]))
    order = ["same language, other script", "same family, same script",
             "same family, different script", "different family, same script",
             "different family, different script"]
    out = ["Overlap by relation, all pairs (family as in `registry/languages.toml`, a coarse "
           "top-level family such as Indo-European):", "",
           "| pairs | n | mean Jaccard | median | share with Jaccard > 0.1 |",
           "|---|---:|---:|---:|---:|"]
    for key in order:
        v = np.array(groups.get(key, []))
        if v.size:
            out.append(f"| {key} | {v.size:,} | {v.mean():.3f} | {np.median(v):.3f} | "
                       f"{100 * (v > 0.1).mean():.1f} % |")
    # varieties of one macrolanguage (same ISO 639-1 code) written in one script
    clusters: dict[tuple[str, str], list[int]] = {}
    for i, lang in enumerate(info):
        if lang.iso639_1:
            clusters.setdefault((lang.iso639_1, lang.script), []).append(i)
    rows = []
    for (code, script), idx in sorted(clusters.items()):
        if len(idx) >= 3:
            v = vals[np.ix_(idx, idx)][np.triu_indices(len(idx), 1)]
            rows.append(f"| {code} ({script}) | {len(idx)} | {v.min():.3f} | {np.median(v):.3f} | "
                        f"{v.max():.3f} |")
    if rows:
        out += ["", "Varieties of one macrolanguage in one script (3 or more in the refset):", "",
                "| ISO 639-1 (script) | varieties | min Jaccard | median | max |",
                "|---|---:|---:|---:|---:|", *rows]
    return out + [""]


def refset_comparison(cat: Catalog, model: str, small: str, large: str) -> list[str]:
    """How a language's set changes when the reference set grows (e.g. 12 -> 205 languages)."""
    spec = resolve_model(model)
    avail = {r: ls for (r, _sel), ls in cat.neuron_sets_available(spec.alias).items()}
    if small not in avail or large not in avail:
        return []
    both = [x for x in avail[small] if x in set(avail[large])]
    out = [f"## The same languages in `{small}` and `{large}`", "",
           f"A neuron is language-specific only relative to the languages it is compared with. "
           f"For the {len(both)} languages in both reference sets:", "",
           f"| language | neurons ({small}) | neurons ({large}) | shared | "
           f"share of the {small} set kept | share of the {large} set inside the {small} set |",
           "|---|---:|---:|---:|---:|---:|"]
    for lang in both:
        a = cat.neuron_set(spec.alias, lang, refset=small)
        b = cat.neuron_set(spec.alias, lang, refset=large)
        shared = len(np.intersect1d(a.global_ids(), b.global_ids()))
        out.append(f"| {lang} | {a.n_neurons:,} | {b.n_neurons:,} | {shared:,} | "
                   f"{100 * shared / max(a.n_neurons, 1):.0f} % | "
                   f"{100 * shared / max(b.n_neurons, 1):.0f} % |")
    return out + [""]


def verify_section(refset: str, path: Path, model: str) -> list[str]:
    """A `lape-hub verify --format markdown` matrix, plus what its diagonal says.

    Rows are zeroed languages, columns evaluated ones; columns may include languages that
    are not rows (e.g. English as a control).
    """
    text = path.read_text().strip()
    rows = [[c.strip() for c in r.strip().strip("|").split("|")]
            for r in text.splitlines() if r.startswith("|")]
    cols = rows[0][1:]
    base = np.array([float(c) for c in rows[2][1:]])
    zeroed = [r[0] for r in rows[3:]]
    rel = np.array([[float(c) for c in r[1:]] for r in rows[3:]]) / base[None, :]
    own = np.array([rel[i, cols.index(z)] for i, z in enumerate(zeroed)])
    mask = np.ones_like(rel, dtype=bool)
    for i, z in enumerate(zeroed):
        mask[i, cols.index(z)] = False
    off = rel[mask]
    own_is_max = sum(int(np.argmax(rel[i]) == cols.index(z)) for i, z in enumerate(zeroed))
    extra = [c for c in cols if c not in zeroed]
    lines = [f"### Neuron sets of refset `{refset}`", "",
             f"`lape-hub verify --model {model} --refset {refset} --langs <the {len(zeroed)}>"
             + (f" --eval-langs <the {len(zeroed)}>,{','.join(extra)}" if extra else "")
             + " --corpus ../shared/data/sib200 --split dev --max-tokens 1024 --format markdown`",
             "", text, "",
             f"Relative increase on the zeroed language itself: median {100 * np.median(own):.0f} % "
             f"(range {100 * own.min():.0f}–{100 * own.max():.0f} %); on the other columns: "
             f"median {100 * np.median(off):.1f} % (max {100 * off.max():.0f} %). "
             f"For {own_is_max} of {len(zeroed)} languages the largest relative increase of its "
             "row is on its own language."]
    for c in extra:
        v = rel[:, cols.index(c)]
        lines[-1] += (f" {c} (not a row, a control): median {100 * np.median(v):.1f} %, "
                      f"max {100 * v.max():.0f} %.")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--refset", action="append", default=None)
    ap.add_argument("--catalog", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--intro", default=None, help="A markdown file to put first.")
    ap.add_argument("--verify-md", action="append", default=[], metavar="REFSET=PATH",
                    help="Output of `lape-hub verify --refset REFSET --format markdown` to include "
                         "(repeatable).")
    args = ap.parse_args()
    cat = Catalog(args.catalog)
    lines = [f"# {args.model} in the catalog", ""]
    if args.intro:
        lines += [Path(args.intro).read_text().rstrip(), ""]
    counted = {e.key["lang"] for e in cat.entries("activation_counts", model=args.model)}
    sizes = {table: sum(f.stat().st_size for f in
                        (cat.root / table / f"model={args.model}").rglob("*.parquet"))
             for table in ("activation_counts", "lape", "neurons")}
    lines += [f"Activation counts stored for {len(counted)} languages. Parquet in the catalog "
              "for this model: " + ", ".join(f"{t} {b / 2**20:.1f} MiB" for t, b in sizes.items())
              + ".", ""]
    for refset in args.refset or ["paper-12", "flores-200"]:
        lines += section(cat, args.model, refset)
    if args.refset and len(args.refset) >= 2:
        lines += refset_comparison(cat, args.model, args.refset[0], args.refset[1])
    if args.verify_md:
        lines += ["## Are the sets real? Zeroing one language's neurons", "",
                  "Rows are the zeroed language's neurons, columns the held-out (SIB-200 dev) "
                  "language; cells are perplexity increases over the baseline row.", ""]
        for item in args.verify_md:
            refset, _, path = item.rpartition("=")
            lines += verify_section(refset or "paper-12", Path(path), args.model)
    out = Path(args.out or f"docs/{args.model}.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
