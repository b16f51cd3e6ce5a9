"""Recount a reference set of Gemma-3-270M in one forward pass per language under two BOS
rules (every position counted / BOS positions apart), check the recount against the stored
counts, and compare the LAPE sets of both rules (docs/gemma-3-270m.md, "Counting choices").

    python scripts/compare_bos_rules.py /tmp/cat float32 paper-12   # CAT: a copy of catalog/
    python scripts/compare_bos_rules.py /tmp/cat float32 paper-12 --report

Writes the recount under revision <rev>-recount and the BOS-skipped counts under the +nobos
corpus id into CAT (resumable: finished languages are skipped). One pass serves both rules:
the BOS-skipped counts are the counts of every position minus those of the BOS positions.
"""


def report(catdir: str, refset: str) -> None:
    """Compare the BOS rules' LAPE sets over the languages recounted so far (--report)."""
    import numpy as np
    from lape_hub.builder import read_counts, counted_langs
    from lape_hub.catalog import Catalog
    from lape_hub.lape import select_lape
    from lape_hub.registry import resolve_refset
    cat = Catalog(catdir)
    rev = "gguf-q4_k_m"
    paper = list(resolve_refset(refset).langs)
    done = [l for l in paper if l in counted_langs(cat, "gemma-3-270m", revision=rev + "-recount", corpus="sib200:train@16384")
            and l in counted_langs(cat, "gemma-3-270m", revision=rev, corpus="sib200:train@16384+nobos")]
    print("languages done:", len(done), done)
    if len(done) < 2:
        return
    ship = read_counts(cat, "gemma-3-270m", done, revision=rev, corpus="sib200:train@16384")
    rec = read_counts(cat, "gemma-3-270m", done, revision=rev + "-recount", corpus="sib200:train@16384")
    skip = read_counts(cat, "gemma-3-270m", done, revision=rev, corpus="sib200:train@16384+nobos")
    def jac(a, b):
        a, b = set(a), set(b); return len(a & b) / max(len(a | b), 1)
    S = {n: select_lape(c.over_zero, c.n_tokens) for n, c in (("ship", ship), ("rec", rec), ("skip", skip))}
    print(f"LAPE over these {len(done)} languages:")
    print("| language | BOS share | neurons on every BOS | set, BOS counted | set, BOS skipped | Jaccard skip vs counted | Jaccard recount vs shipped |")
    for k, l in enumerate(done):
        nb = int(rec.n_tokens[k] - skip.n_tokens[k])
        bos_counts = rec.over_zero[:, :, k] - skip.over_zero[:, :, k]
        every = int((bos_counts == nb).sum())
        a, b, c = S["rec"].neurons(k), S["skip"].neurons(k), S["ship"].neurons(k)
        print(f"| {l} | {nb / rec.n_tokens[k]:.2%} | {every:,} | {len(a)} | {len(b)} | {jac(a, b):.3f} | {jac(a, c):.3f} |")
    js = [jac(S["rec"].neurons(k), S["skip"].neurons(k)) for k in range(len(done))]
    jr = [jac(S["rec"].neurons(k), S["ship"].neurons(k)) for k in range(len(done))]
    d = np.abs(rec.over_zero - ship.over_zero)
    print(f"skip vs counted: Jaccard {min(js):.3f}-{max(js):.3f} (mean {np.mean(js):.3f}); recount vs shipped: {min(jr):.3f}-{max(jr):.3f}; "
          f"recount vs shipped counts: {int((d > 0).sum())} of {d.size} (neuron, language) counts differ, max |diff| {int(d.max())}")
    print("tau", {n: (round(s.tau_filter, 4), round(s.tau_bar, 4)) for n, s in S.items()})
    if len(done) == 12:
        shipped_sets = [Catalog().neuron_set("gemma-3-270m", l, refset=refset) for l in done]
        for k, l in enumerate(done):
            got = [(layer, int(n)) for layer, idx in enumerate(shipped_sets[k].layers) for n in idx]
            assert got == S["ship"].neurons(k)


import sys, time
from pathlib import Path
SIB = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"
import numpy as np, torch
from lape_hub.activation_counts import count_activations, set_threads
from lape_hub.builder import CorpusKey, counted_langs, model_revision, write_counts
from lape_hub.catalog import Catalog
from lape_hub.corpus import read_documents, tokenize_and_pack
from lape_hub.ffn import find_ffn_layers, trunk
from lape_hub.models import load_model
from lape_hub.registry import resolve_model, resolve_refset

catdir, dtype, refset = sys.argv[1], sys.argv[2], sys.argv[3]
if "--report" in sys.argv:
    report(catdir, refset)
    raise SystemExit
cat = Catalog(catdir)
spec = resolve_model("gemma-3-270m"); rev = model_revision(spec)
keys = {b: CorpusKey("sib200", "train", 16384, dtype, b) for b in ("count", "skip")}
set_threads(1)
model, tok = load_model(spec, dtype=dtype)
bos = tok.bos_token_id
layers = find_ffn_layers(model)
body = trunk(model)
cur = {}
body.register_forward_pre_hook(lambda m, a, k: cur.__setitem__("ids", k["input_ids"]), with_kwargs=True)
bos_counts = torch.zeros(len(layers), layers[0].d_ffn, dtype=torch.int64)
current = [-1]
for l in layers:
    l.mlp.register_forward_pre_hook(lambda m, a, i=l.index: current.__setitem__(0, i))
for act in {id(l.act): l.act for l in layers}.values():
    def post(m, a, out):
        at = (cur["ids"] == bos).reshape(-1)
        bos_counts[current[0]] += (out.reshape(-1, out.shape[-1])[at] > 0).sum(0)
    act.register_forward_hook(post)
langs = list(resolve_refset(refset).langs)
langs = langs[1:] + langs[:1]  # mlt_Latn (skip counts already made) last
for lang in langs:
    done = {b: lang in counted_langs(cat, spec.alias, revision=rev, corpus=k.id) for b, k in keys.items()}
    if dtype == "float32" and lang in counted_langs(cat, spec.alias, revision=rev + "-recount", corpus=keys["count"].id):
        continue
    if all(done.values()) and lang != "mlt_Latn":
        continue
    t0 = time.time()
    packed = tokenize_and_pack(read_documents(SIB, lang, "train"), tok, 512, 16384, min_tokens=1000, lang=lang)
    assert packed.attention_mask.all()  # 16384 = 32 full rows: no padding, every BOS is real
    bos_counts.zero_()
    c = count_activations(model, packed, batch_size=4, progress=False)
    n_bos = int((packed.input_ids == bos).sum())
    common = {"corpus_source": "sib200", "split": "train", "max_tokens": 16384, "seq_len": 512,
              "n_sequences": packed.n_sequences, "n_documents": packed.n_documents,
              "n_input_tokens": packed.n_tokens, "corpus_exhausted": False, "dtype": dtype,
              "device": "cpu", "world_size": 1, "refset": refset}
    if done["count"]:
        from lape_hub.builder import read_counts
        st = read_counts(cat, spec.alias, [lang], revision=rev, corpus=keys["count"].id)
        same = bool((st.over_zero[:, :, 0] == c.over_zero).all()) and int(st.n_tokens[0]) == c.n_tokens
        d = np.abs(st.over_zero[:, :, 0] - c.over_zero)
        print(f"{lang}: recount identical to the stored {keys['count'].id} counts: {same}; "
              f"differing neurons {int((d > 0).sum())}, max |diff| {int(d.max())}, sum {int(d.sum())}", flush=True)
        write_counts(cat, spec.alias, lang, c.over_zero, c.n_tokens, revision=rev + "-recount",
                     corpus=keys["count"].id, params={**common, "bos": "count"})
    else:
        write_counts(cat, spec.alias, lang, c.over_zero, c.n_tokens, revision=rev, corpus=keys["count"].id,
                     params={**common, "bos": "count"})
    if not done["skip"]:
        write_counts(cat, spec.alias, lang, c.over_zero - bos_counts.numpy(), c.n_tokens - n_bos, revision=rev,
                     corpus=keys["skip"].id, params={**common, "bos": "skip"})
    print(f"{lang}: {c.n_tokens} tokens, {n_bos} BOS, {time.time() - t0:.0f} s", flush=True)
print("done", flush=True)
