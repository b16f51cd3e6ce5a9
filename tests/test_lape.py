"""LAPE selection: hand-checkable cases and an independent loop-based re-implementation."""
import math

import numpy as np
import pytest

from lape_hub.lape import SelectionParams, kth_value, lape_entropy, select_lape


def reference_selection(over_zero, n_tokens, top_rate, filter_rate, bar_rate):
    """The paper's procedure written out with Python loops, float64, no numpy tricks."""
    L, N, K = len(over_zero), len(over_zero[0]), len(over_zero[0][0])
    p = [[[over_zero[l][i][k] / n_tokens[k] for k in range(K)] for i in range(N)] for l in range(L)]
    flat = sorted(x for l in range(L) for i in range(N) for x in p[l][i])
    tau_f = flat[max(1, round(len(flat) * filter_rate)) - 1]
    tau_b = flat[max(1, round(len(flat) * bar_rate)) - 1]
    ent = {}
    for l in range(L):
        for i in range(N):
            s = sum(p[l][i])
            q = [x / s if s > 0 else 0.0 for x in p[l][i]]
            h = -sum(x * math.log(x) for x in q if x > 0)
            if not any(x > tau_f for x in p[l][i]):
                h = math.inf
            ent[(l, i)] = h
    n_keep = round(L * N * top_rate)
    kept = sorted(ent, key=lambda key: (ent[key], key))[:n_keep]
    sets = {k: sorted((l, i) for (l, i) in kept if p[l][i][k] > tau_b) for k in range(K)}
    return tau_f, tau_b, sets


def test_hand_checkable():
    # neuron 0 fires for lang 0 only, 1 for both, 2 for lang 1 only, 3 never
    over_zero = np.array([[[90, 1], [50, 50], [1, 80], [0, 0]]])
    r = select_lape(over_zero, np.array([100, 100]), top_rate=0.5, filter_rate=0.75, bar_rate=0.75)
    # p values sorted: 0,0,.01,.01,.5,.5,.8,.9 -> k=6 -> tau=0.5
    assert r.tau_filter == pytest.approx(0.5) and r.tau_bar == pytest.approx(0.5)
    assert np.isinf(r.entropy[0, 3])  # never fires -> filtered even though its entropy is 0
    assert np.isinf(r.entropy[0, 1])  # p = .5 for both: not above tau = .5 -> filtered
    assert lape_entropy(r.probs)[0, 1] == pytest.approx(math.log(2), rel=1e-6)  # uniform
    assert r.neurons(0) == [(0, 0)] and r.neurons(1) == [(0, 2)]
    assert r.selected.tolist() == [[True, False, True, False]]


def test_neuron_in_several_languages():
    # 3 languages; neuron 0 fires for langs 0 and 1 (not 2): low-ish entropy, member of both
    over_zero = np.array([[[80, 85, 0], [10, 10, 10], [0, 0, 90], [5, 5, 5]]])
    r = select_lape(over_zero, np.array([100, 100, 100]), top_rate=0.5, filter_rate=0.7,
                    bar_rate=0.7)
    assert (0, 0) in r.neurons(0) and (0, 0) in r.neurons(1)
    assert r.neurons(2) == [(0, 2)]


def test_zero_over_zero_is_zero_entropy_not_nan():
    p = np.array([[[0.0, 0.0], [0.5, 0.0]]], dtype=np.float32)
    e = lape_entropy(p)
    assert not np.isnan(e).any() and e.tolist() == [[0.0, 0.0]]


def test_kth_value_is_torch_kthvalue():
    x = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert kth_value(x, 0.95) == 5.0  # round(4.75) = 5 -> 5th smallest
    assert kth_value(x, 0.5) == 2.0   # round(2.5) = 2 (banker's) -> 2nd smallest


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_reimplementation(seed):
    rng = np.random.default_rng(seed)
    L, N, K = 3, 40, 4
    n_tokens = rng.integers(200, 400, size=K)
    base = rng.beta(0.5, 2, size=(L, N, 1))
    spike = (rng.random((L, N, K)) < 0.1) * rng.uniform(0.2, 0.6, size=(L, N, K))
    over_zero = rng.binomial(n_tokens, np.clip(base + spike, 0, 1))
    r = select_lape(over_zero, n_tokens, top_rate=0.1, filter_rate=0.9, bar_rate=0.85)
    tau_f, tau_b, sets = reference_selection(over_zero.tolist(), n_tokens.tolist(), 0.1, 0.9, 0.85)
    assert r.tau_filter == pytest.approx(tau_f, rel=1e-6)
    assert r.tau_bar == pytest.approx(tau_b, rel=1e-6)
    for k in range(K):
        assert r.neurons(k) == sets[k]


def test_against_torch_reference_code():
    """The reference implementation's own torch ops (identify.py) on random counts."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    L, N, K = 4, 64, 5
    n = rng.integers(500, 900, size=K)
    over_zero = rng.binomial(n, np.clip(rng.beta(0.4, 2, size=(L, N, K)) +
                                        (rng.random((L, N, K)) < 0.05) * 0.5, 0, 1))
    oz, nt = torch.tensor(over_zero), torch.tensor(n)
    probs = oz / nt
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_probs = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_probs, dim=-1)
    flat = probs.flatten()
    top_prob = flat.kthvalue(round(len(flat) * 0.95)).values.item()
    entropy[(probs > top_prob).sum(dim=-1) == 0] = torch.inf
    fe = entropy.flatten()
    _, index = fe.topk(round(len(fe) * 0.05), largest=False)
    rows, cols = index // entropy.size(1), index % entropy.size(1)
    sel = probs[rows, cols].transpose(0, 1)
    bar = flat.kthvalue(round(len(flat) * 0.95)).values.item()
    lang, idx = torch.where(sel > bar)
    ref = {k: sorted((int(rows[i]), int(cols[i])) for i, kk in zip(idx, lang) if kk == k)
           for k in range(K)}
    r = select_lape(over_zero, n)
    assert r.tau_filter == pytest.approx(top_prob)
    for k in range(K):
        assert r.neurons(k) == ref[k]


def test_params_validation_and_key():
    p = SelectionParams(0.01, 0.9, 0.95)
    assert SelectionParams.from_key(p.key) == p
    with pytest.raises(ValueError):
        SelectionParams(top_rate=0.0)
    with pytest.raises(ValueError):
        select_lape(np.zeros((1, 2, 1), int), np.array([3]))


def test_ties_at_the_cut_lower_flat_index_wins():
    """Hundreds of neurons share one entropy and the cut falls inside them: the documented
    rule keeps the lowest flat indices (layer-major), whatever an unstable sort would pick."""
    L, N = 2, 500
    rng = np.random.default_rng(3)
    low = rng.random((L, N)) < 0.6                # p = (.9, .1): the lower entropy, tied
    over_zero = np.where(low[..., None], [90, 10], [70, 30]).astype(np.int64)
    over_zero[1, 7] = [0, 0]                      # never fires: filtered (entropy +inf)
    r = select_lape(over_zero, np.array([100, 100]), top_rate=0.3, filter_rate=0.4,
                    bar_rate=0.4)
    n_keep = round(L * N * 0.3)
    low_flat = np.flatnonzero(low.reshape(-1))
    assert len(low_flat) > n_keep                 # the cut is inside the tie
    want = [[i // N, i % N] for i in low_flat[:n_keep]]
    assert r.kept.tolist() == want
    assert r.neurons(0) == [tuple(x) for x in want] and r.neurons(1) == []


def test_selected_mask_leaves_out_filtered_neurons_even_when_kept():
    """When fewer neurons survive the filter than top_rate keeps, the +inf ones fill the
    kept list (as in the reference's topk) but are not ``selected`` and join no set."""
    over_zero = np.array([[[95, 0], [0, 90], [3, 3], [2, 2], [1, 1], [0, 0]]])
    r = select_lape(over_zero, np.array([100, 100]), top_rate=0.5, filter_rate=0.75,
                    bar_rate=0.75)
    assert len(r.kept) == 3
    assert r.selected.dtype == bool
    assert r.selected.tolist() == [[True, True, False, False, False, False]]
    assert np.isinf(r.entropy[0, 2:]).all()
    assert r.neurons(0) == [(0, 0)] and r.neurons(1) == [(0, 1)]


def test_dtypes_follow_the_reference():
    over_zero = np.array([[[90, 1], [50, 50], [1, 80], [0, 0]]], dtype=np.int64)
    r = select_lape(over_zero, np.array([100, 100]), top_rate=0.5, filter_rate=0.75,
                    bar_rate=0.75)
    assert r.probs.dtype == np.float32 and r.entropy.dtype == np.float32
    assert r.kept.dtype == np.int64 and r.member.dtype == bool
    # float32 division, not float64: 1/3 rounds differently
    p = select_lape(np.array([[[1, 2], [2, 1]]]), np.array([3, 3]), top_rate=0.5).probs
    assert p[0, 0, 0] == np.float32(1) / np.float32(3)
    assert lape_entropy(np.array([[[1 / 3, 2 / 3]]])).dtype == np.float32


def test_params_are_recorded():
    r = select_lape(np.array([[[90, 1], [1, 80]]]), np.array([100, 100]), top_rate=0.5,
                    filter_rate=0.6, bar_rate=0.7)
    assert r.params == SelectionParams(0.5, 0.6, 0.7)


def test_entropy_needs_no_warnings_for_zero_rows():
    p = np.array([[[0.0, 0.0], [0.0, 0.3], [0.2, 0.2]]], dtype=np.float32)
    with np.errstate(all="raise"):
        e = lape_entropy(p)
    assert e[0].tolist() == pytest.approx([0.0, 0.0, math.log(2)])


def test_n_tokens_must_be_positive():
    with pytest.raises(ValueError, match="^every language needs n_tokens > 0$"):
        select_lape(np.zeros((1, 2, 2), int), np.array([0, 5]))
    r = select_lape(np.array([[[1, 0], [0, 1]]]), np.array([1, 1]), top_rate=0.5)  # 1 is fine
    assert r.probs.max() == 1.0


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^over_zero must be \[layers, neurons, langs\]$"):
        select_lape(np.zeros((2, 2), int), np.array([3, 3]))
    with pytest.raises(ValueError, match="^LAPE needs at least two languages$"):
        select_lape(np.zeros((1, 2, 1), int), np.array([3]))


def test_kth_value_floor_is_the_smallest():
    x = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert kth_value(x, 0.01) == 1.0   # round(0.05) = 0 -> clamped to k = 1
    assert kth_value(x, 1.0) == 5.0


@pytest.mark.parametrize("key,params", [
    ("top1-f0.5-b1", SelectionParams(1.0, 0.5, 1.0)),
    ("top0.05-f1-b0.5", SelectionParams(0.05, 1.0, 0.5)),
    ("top0.2-f0.9-b1", SelectionParams(0.2, 0.9, 1.0)),
])
def test_selection_key_parses_every_field(key, params):
    assert SelectionParams.from_key(key) == params and params.key == key


def test_rates_are_in_zero_one():
    assert SelectionParams(1.0, 1.0, 1.0).key == "top1-f1-b1"
    for bad in (0.0, -0.1, 1.5, 2.0):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
            SelectionParams(bar_rate=bad)
    with pytest.raises(ValueError, match="not a selection key: 'top-x'"):
        SelectionParams.from_key("top-x")
