"""lape_hub.activation_counts, the parts tests/test_activation_counts.py leaves open (issue 14):
the thread-count probe and its cache, the process-group set-up, the OOM test, checkpoint
files and messages, ActivationCounts arithmetic.

All in process and fast (no model unless named); values expected are written out here.
torch.distributed and CUDA are replaced by recorders where a real one cannot run in a unit
test (no second process, no GPU).
"""
from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

import lape_hub.activation_counts as ac
from lape_hub.activation_counts import ActivationCounts, count_activations
from lape_hub.errors import LapeHubError
from test_activation_counts import oom_above


# -- ActivationCounts ---------------------------------------------------------------------

def test_probabilities_divide_by_the_token_count():
    assert ActivationCounts(1, np.array([[1, 0]])).probabilities().tolist() == [[1.0, 0.0]]
    assert ActivationCounts(3, np.array([[3, 1]])).probabilities().tolist() == [[1.0, 1 / 3]]
    # no tokens: all zero, no division by zero
    assert ActivationCounts(0, np.zeros((1, 2))).probabilities().tolist() == [[0.0, 0.0]]


def test_counts_are_int64_and_two_dimensional():
    c = ActivationCounts(5, [[1, 2, 3]], 2)
    assert c.over_zero.dtype == np.int64 and (c.n_layers, c.d_ffn) == (1, 3)
    with pytest.raises(ValueError, match=r"over_zero must be \[n_layers, d_ffn\], got shape \(3,\)"):
        ActivationCounts(5, [1, 2, 3])


def test_float_counts_become_int64():
    c = ActivationCounts(4, np.array([[1.0, 3.0]], dtype=np.float32))
    assert c.over_zero.dtype == np.int64 and c.over_zero.tolist() == [[1, 3]]


def test_model_device_is_the_input_embeddings_device():
    """Counting sums on the device of the input embeddings (where the ids must go), not of
    whatever parameter comes first; without embeddings, the first parameter's."""
    class WithEmbeddings(torch.nn.Module):
        def __init__(self, emb):
            super().__init__()
            self.head = torch.nn.Linear(2, 2)                 # first parameter: on the CPU
            self.emb = emb

        def get_input_embeddings(self):
            return self.emb

    meta = torch.nn.Embedding(4, 2, device="meta")
    assert ac._model_device(WithEmbeddings(meta)) == torch.device("meta")
    # embeddings without a weight, or none at all: the first parameter decides
    assert ac._model_device(WithEmbeddings(torch.nn.Identity())) == torch.device("cpu")
    assert ac._model_device(WithEmbeddings(None)) == torch.device("cpu")
    assert ac._model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")


def test_adding_counts_adds_tokens_counts_and_sequences():
    a = ActivationCounts(10, np.array([[1, 2]]), 3)
    b = ActivationCounts(7, np.array([[4, 0]]), 2)
    s = a + b
    assert (s.n_tokens, s.over_zero.tolist(), s.n_sequences) == (17, [[5, 2]], 5)
    with pytest.raises(ValueError, match=r"^shape \(1, 2\) != \(2, 1\)$"):
        a + ActivationCounts(1, np.zeros((2, 1)), 1)


# -- threads ------------------------------------------------------------------------------

@pytest.mark.parametrize("n_cpus, expect", [
    (1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (8, [1, 2, 4, 8]), (12, [1, 2, 4, 8, 12]),
    # powers of two are tried up to 128; the full count is always tried
    (300, [1, 2, 4, 8, 16, 32, 64, 128, 300]),
])
def test_thread_candidates(n_cpus, expect):
    assert ac._thread_candidates(n_cpus) == expect


def test_time_threads_times_on_n_threads_and_restores(monkeypatch):
    """The matmul runs on ``n`` threads, the best of ``repeats`` timings is returned, and the
    thread count is restored after."""
    seen, clock = [], iter([0.0, 5.0, 10.0, 12.0, 20.0, 27.0])

    def fake_clock():
        seen.append(torch.get_num_threads())
        return next(clock)

    before = torch.get_num_threads()
    n = 1 if before != 1 else 2
    monkeypatch.setattr(ac.time, "perf_counter", fake_clock)
    assert ac._time_threads(n, torch.float32) == 2.0  # timings 5, 2, 7
    assert seen == [n] * 6 and torch.get_num_threads() == before


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """fastest_threads on a fake 4-CPU machine named 'testcpu' whose timings are
    1: 2.0 s, 2: 1.023456 s, 4: 1.04 s; the calls are recorded in ``probe.calls``."""
    monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path / "c" / "d"))  # parents missing
    calls = []
    timings = {1: 2.0, 2: 1.023456, 4: 1.04, 3: 0.5}

    def fake(n, dtype):
        calls.append((n, dtype))
        return timings[n]

    monkeypatch.setattr(ac, "_time_threads", fake)
    monkeypatch.setattr(ac.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(platform, "processor", lambda: "testcpu")
    fake.calls, fake.file = calls, tmp_path / "c" / "d" / "threads.json"
    fake.key = f"4|testcpu|{torch.__version__}|bfloat16"
    return fake


def test_fastest_threads_picks_the_fastest_and_caches_it(probe, caplog):
    with caplog.at_level(logging.INFO, logger="lape_hub.activation_counts"):
        assert ac.fastest_threads() == 2
    assert probe.calls == [(1, torch.bfloat16), (2, torch.bfloat16), (4, torch.bfloat16)]
    assert [r.getMessage() for r in caplog.records] == [
        "thread counts timed: {1: 2.0, 2: 1.0235, 4: 1.04}; using 2"]
    # one entry per line, readable by a person who wants to delete one
    assert probe.file.read_text().splitlines() == ["{", f' "{probe.key}": 2', "}"]


def test_fastest_threads_keys_by_dtype_and_keeps_other_entries(probe):
    assert ac.fastest_threads() == 2
    assert ac.fastest_threads(dtype="float32") == 2
    assert probe.calls[3:] == [(1, torch.float32), (2, torch.float32), (4, torch.float32)]
    assert json.loads(probe.file.read_text()) == {
        probe.key: 2, f"4|testcpu|{torch.__version__}|float32": 2}


def test_fastest_threads_ties_go_to_fewer_threads(probe, monkeypatch):
    monkeypatch.setattr(ac, "_time_threads", lambda n, dtype: 1.0)
    assert ac.fastest_threads(cache=False) == 1


def test_fastest_threads_without_cache_neither_reads_nor_writes(probe):
    probe.file.parent.mkdir(parents=True)
    probe.file.write_text(json.dumps({probe.key: 4}))
    assert ac.fastest_threads(cache=False) == 2 and len(probe.calls) == 3
    assert json.loads(probe.file.read_text()) == {probe.key: 4}
    probe.file.unlink()
    assert ac.fastest_threads(cache=False) == 2 and not probe.file.exists()


@pytest.mark.parametrize("cached, used", [(1, True), (4, True), (0, False), (5, False),
                                          ("2", False), (2.0, False)])
def test_fastest_threads_uses_only_a_plausible_cached_count(probe, cached, used):
    probe.file.parent.mkdir(parents=True)
    probe.file.write_text(json.dumps({probe.key: cached, "other": 3}))
    assert ac.fastest_threads() == (cached if used else 2)
    assert probe.calls == ([] if used else [(1, torch.bfloat16), (2, torch.bfloat16), (4, torch.bfloat16)])
    if not used:  # measured again and rewritten, the other entry kept
        assert json.loads(probe.file.read_text()) == {probe.key: 2, "other": 3}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff"])
def test_fastest_threads_measures_again_over_a_damaged_cache(probe, text):
    probe.file.parent.mkdir(parents=True)
    probe.file.write_bytes(text.encode("latin-1"))
    assert ac.fastest_threads() == 2
    assert json.loads(probe.file.read_text()) == {probe.key: 2}


def test_fastest_threads_with_an_unwritable_cache_still_answers(probe, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path / "file" / "cache"))
    assert ac.fastest_threads() == 2


def test_fastest_threads_counts_cpus_without_affinity(probe, monkeypatch):
    monkeypatch.delattr(ac.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(ac.os, "cpu_count", lambda: 3)
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "testarch")
    assert ac.fastest_threads() == 3  # timings: 3 threads 0.5 s
    assert [n for n, _ in probe.calls] == [1, 2, 3]
    assert list(json.loads(probe.file.read_text())) == [f"3|testarch|{torch.__version__}|bfloat16"]
    monkeypatch.setattr(ac.os, "cpu_count", lambda: None)  # unknown: one
    assert ac.fastest_threads(cache=False) == 1


def test_set_threads(monkeypatch):
    asked = []
    monkeypatch.setattr(ac, "fastest_threads", lambda **kw: asked.append(kw) or 3)
    before = torch.get_num_threads()
    try:
        assert ac.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert ac.set_threads() == 3 and asked == [{"dtype": "bfloat16"}]
        assert ac.set_threads(dtype="float32") == 3 and asked[-1] == {"dtype": "float32"}
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=r"^threads must be >= 1$"):
            ac.set_threads(bad)


# -- distributed set-up -------------------------------------------------------------------

@pytest.fixture
def fake_dist(monkeypatch):
    """torch.distributed and CUDA replaced by recorders: init_process_group marks the group
    initialised with rank 1 of 2; set_device is recorded."""
    state = {"init": [], "device": [], "up": False}

    def init_process_group(backend=None, **kw):
        state["init"].append(backend)
        state["up"] = True

    monkeypatch.setattr(ac.dist, "is_available", lambda: True)
    monkeypatch.setattr(ac.dist, "is_initialized", lambda: state["up"])
    monkeypatch.setattr(ac.dist, "init_process_group", init_process_group)
    monkeypatch.setattr(ac.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(ac.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(ac.torch.cuda, "set_device", lambda i: state["device"].append(i))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    return state


def test_init_distributed_on_cpu_joins_with_gloo(fake_dist, monkeypatch):
    monkeypatch.setattr(ac.torch.cuda, "is_available", lambda: False)
    info = ac.init_distributed()
    assert info == ac.DistInfo(rank=1, world_size=2, local_rank=1, device="cpu")
    assert not info.is_main
    assert fake_dist["init"] == ["gloo"] and fake_dist["device"] == []


def test_init_distributed_on_gpus_joins_with_nccl_on_its_own_gpu(fake_dist, monkeypatch):
    monkeypatch.setattr(ac.torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    info = ac.init_distributed()
    assert info == ac.DistInfo(rank=1, world_size=2, local_rank=3, device="cuda:3")
    assert fake_dist["init"] == ["nccl"] and fake_dist["device"] == [3]


def test_init_distributed_named_backend(fake_dist, monkeypatch):
    monkeypatch.setattr(ac.torch.cuda, "is_available", lambda: True)
    ac.init_distributed("gloo")  # gloo on a GPU machine: no device pinning
    assert fake_dist["init"] == ["gloo"] and fake_dist["device"] == []


def test_init_distributed_joins_once_and_only_under_torchrun(fake_dist, monkeypatch):
    monkeypatch.setattr(ac.torch.cuda, "is_available", lambda: False)
    ac.init_distributed()
    ac.init_distributed()  # already in the group: not joined twice
    assert fake_dist["init"] == ["gloo"]
    fake_dist["up"] = False
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("LOCAL_RANK")
    info = ac.init_distributed()
    assert fake_dist["init"] == ["gloo"]  # one process: nothing to join
    assert info == ac.DistInfo(0, 1, 0, "cpu") and info.is_main


# -- out of memory, checkpoints -------------------------------------------------------------

@pytest.mark.parametrize("exc, oom", [
    (torch.OutOfMemoryError("x"), True),
    (RuntimeError("CUDA error: out of memory"), True),
    (RuntimeError("CUDA OUT OF MEMORY"), True),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate"), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),  # only runtime errors say it in words
])
def test_is_oom(exc, oom):
    assert ac._is_oom(exc) is oom


def test_checkpoint_file_per_rank(tmp_path):
    one = ac._Checkpoint(tmp_path / "c.npz", "f", (2, 3), rank=0, world=1)
    assert one.path == tmp_path / "c.npz"
    two = ac._Checkpoint(tmp_path / "c.npz", "f", (2, 3), rank=1, world=2)
    assert two.path == tmp_path / "c.npz.rank1-of-2"


def test_checkpoint_round_trip_and_refusals(tmp_path):
    ck = ac._Checkpoint(tmp_path / "c.npz", "fp", (1, 2), rank=0, world=1)
    assert ck.load() is None
    ck.save(3, torch.tensor([[5, 0]]), 11, 3)
    pos, oz, n_tokens, n_seqs = ck.load()
    assert (pos, oz.tolist(), n_tokens, n_seqs) == (3, [[5, 0]], 11, 3) and oz.dtype == np.int64
    other = ac._Checkpoint(tmp_path / "c.npz", "other", (1, 2), rank=0, world=1)
    with pytest.raises(LapeHubError) as exc:
        other.load()
    assert str(exc.value) == (f"checkpoint {tmp_path / 'c.npz'} was made for another corpus, "
                              "model or world size; delete it or choose another checkpoint path")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(LapeHubError) as exc:
        ck.load()
    assert str(exc.value).startswith(f"checkpoint {tmp_path / 'c.npz'} is unreadable (")
    assert str(exc.value).endswith("); delete it to start over")


# -- count_activations ----------------------------------------------------------------------

from _tiny_models import CONFIGS, tiny_model  # noqa: E402
from lape_hub.corpus import PackedCorpus  # noqa: E402


def corpus(n_rows: int, seq_len: int = 6, pad_last: int = 2, seed: int = 0) -> PackedCorpus:
    """``n_rows`` rows of random byte tokens; the last row has ``pad_last`` padded positions."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 260, (n_rows, seq_len), generator=g)
    mask = torch.ones_like(ids)
    if pad_last:
        mask[-1, -pad_last:] = 0
        ids[-1, -pad_last:] = 0
    return PackedCorpus(ids, mask, int(mask.sum()), n_rows)


def rows(p: PackedCorpus, lo: int, hi: int) -> PackedCorpus:
    m = p.attention_mask[lo:hi]
    return PackedCorpus(p.input_ids[lo:hi], m, int(m.sum()), hi - lo)


class Bar:
    """Records what count_activations asks of its progress bar."""
    made: list["Bar"] = []

    def __init__(self, **kw):
        self.kw, self.updates, self.closed = kw, [], False
        Bar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    import tqdm.auto

    Bar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    return Bar.made


def forward_rows(model) -> list[int]:
    """Records the batch size of every trunk forward of ``model``."""
    seen, real = [], model.model.forward

    def forward(*a, **k):
        seen.append(int(k["input_ids"].shape[0]))
        return real(*a, **k)

    model.model.forward = forward
    return seen


def test_batch_size_and_checkpoint_interval_are_checked():
    model, p = tiny_model("llama"), corpus(2)
    for kw in ({"batch_size": 0}, {"checkpoint_every": 0}, {"batch_size": -1, "checkpoint_every": 5}):
        with pytest.raises(ValueError, match=r"^batch_size and checkpoint_every must be >= 1$"):
            count_activations(model, p, progress=False, **kw)
    got = count_activations(model, p, batch_size=1, checkpoint_every=1, progress=False)
    assert got.n_sequences == 2 and got.n_tokens == 10


def test_defaults_batches_of_8_and_a_progress_bar_in_tokens(bars):
    model, p = tiny_model("llama"), corpus(9)
    seen = forward_rows(model)
    got = count_activations(model, p)
    assert seen == [8, 1]
    assert [b.kw for b in bars] == [dict(total=52, initial=0, unit="tok", unit_scale=True,
                                         desc="counting", disable=False)]
    assert bars[0].updates == [48, 4] and bars[0].closed  # tokens per batch (last row: 4)
    assert (got.n_tokens, got.n_sequences) == (52, 9)
    count_activations(model, p, progress=False, desc="mlt_Latn")
    assert bars[1].kw["desc"] == "mlt_Latn" and bars[1].kw["disable"] is True


def test_checkpoints_every_n_sequences_in_whole_batches(tmp_path, monkeypatch):
    saved = []
    real = ac._Checkpoint.save
    monkeypatch.setattr(ac._Checkpoint, "save",
                        lambda self, pos, *a: saved.append(pos) or real(self, pos, *a))
    model = tiny_model("llama")
    count_activations(model, corpus(9), batch_size=2, checkpoint_every=4,
                      checkpoint_path=tmp_path / "a.npz", progress=False)
    assert saved == [4, 8, 9]  # at >= 4, then >= 8, and at the end
    saved.clear()
    p = corpus(300, seq_len=2, pad_last=0)
    count_activations(model, p, checkpoint_path=tmp_path / "b.npz", progress=False)
    assert saved == [256, 300]  # default: every 256 sequences (batches of 8)


def test_resume_continues_at_the_checkpoint_with_exact_int64_sums(tmp_path, caplog, bars):
    """Interrupted after two batches (checkpoint at row 4), resumed: only the rest is
    counted, on top of the stored counts. The stored counts are raised by 2**24 first: a
    float32 sum would lose the +1s above that (int64 keeps them)."""
    model, p = tiny_model("gemma3"), corpus(9)
    plain = count_activations(model, p, batch_size=2, progress=False)
    ckpt = tmp_path / "c.npz"
    real, calls = model.model.forward, [0]

    def dies_on_third(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("killed")
        return real(*a, **k)

    model.model.forward = dies_on_third
    with pytest.raises(RuntimeError, match="killed"):
        count_activations(model, p, batch_size=2, checkpoint_path=ckpt, checkpoint_every=4,
                          progress=False)
    with np.load(ckpt) as z:
        stored = dict(z)
    assert int(stored["position"]) == 4 and int(stored["n_tokens"]) == 24
    stored["over_zero"] = stored["over_zero"] + 2**24
    with open(ckpt, "wb") as f:
        np.savez(f, **stored)
    model.model.forward = real
    seen = forward_rows(model)
    with caplog.at_level(logging.INFO, logger="lape_hub.activation_counts"):
        got = count_activations(model, p, batch_size=2, checkpoint_path=ckpt, checkpoint_every=4)
    assert seen == [2, 2, 1]  # rows 4-5, 6-7, 8
    assert [r.getMessage() for r in caplog.records] == [
        f"resuming activation counting at sequence 4 of 9 from {ckpt}"]
    assert bars[-1].kw["initial"] == 24 and bars[-1].kw["total"] == 52
    assert (got.n_tokens, got.n_sequences) == (plain.n_tokens, plain.n_sequences)
    np.testing.assert_array_equal(got.over_zero, plain.over_zero + 2**24)


def test_one_layer_model():
    cfg = CONFIGS["llama"]()
    cfg.num_hidden_layers = 1
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    got = count_activations(model, corpus(3), batch_size=2, progress=False)
    assert got.over_zero.shape == (1, cfg.intermediate_size) and got.n_tokens == 16


def test_layers_of_different_widths_are_refused():
    model = tiny_model("llama")
    mlp = model.model.layers[2].mlp
    d = mlp.gate_proj.in_features
    mlp.gate_proj, mlp.up_proj = torch.nn.Linear(d, 8, bias=False), torch.nn.Linear(d, 8, bias=False)
    mlp.down_proj = torch.nn.Linear(8, d, bias=False)
    with pytest.raises(LapeHubError) as exc:
        count_activations(model, corpus(2), progress=False)
    assert str(exc.value) == "layers with different FFN widths are not supported by count_activations"


@pytest.fixture
def rank_of_two(monkeypatch):
    """This process as rank ``r`` of 2 (set ``rank_of_two.rank``); all_reduce doubles in
    place (as if the other rank had counted the same) and records what it was given."""
    state = {"rank": 1, "reduced": []}

    def all_reduce(t):
        state["reduced"].append(t.clone())
        t.mul_(2)

    monkeypatch.setattr(ac, "_dist_world", lambda: (state["rank"], 2))
    monkeypatch.setattr(ac.dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(ac.dist, "all_reduce", all_reduce)
    return state


def test_a_rank_counts_its_shard_and_returns_the_reduced_totals(rank_of_two, tmp_path, bars):
    model, p = tiny_model("qwen2"), corpus(9)
    with pytest.MonkeyPatch.context() as m:  # the shard counted alone, as one process
        m.setattr(ac, "_dist_world", lambda: (0, 1))
        shard = count_activations(model, rows(p, 5, 9), batch_size=2, progress=False)
    got = count_activations(model, p, batch_size=2, checkpoint_path=tmp_path / "c.npz")
    # rank 1 of 2 holds rows 5..8 (tensor_split: 5 + 4); totals are what all_reduce left
    counts, scalars = rank_of_two["reduced"]
    np.testing.assert_array_equal(counts.numpy(), shard.over_zero)
    assert scalars.tolist() == [shard.n_tokens, 4]
    assert (got.n_tokens, got.n_sequences) == (2 * shard.n_tokens, 8)
    np.testing.assert_array_equal(got.over_zero, 2 * shard.over_zero)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.npz.rank1-of-2"]
    assert bars[-1].kw["desc"] == "counting (rank 0 of 2)" and bars[-1].kw["disable"] is True
    rank_of_two["rank"] = 0
    count_activations(model, p, batch_size=2)
    assert bars[-1].kw["disable"] is False  # only rank 0 shows progress
    assert bars[-1].kw["total"] == int(p.attention_mask[:5].sum())


def test_a_rank_without_rows_counts_nothing_and_leaves_a_checkpoint(rank_of_two, tmp_path):
    model, p = tiny_model("llama"), corpus(1)
    got = count_activations(model, p, batch_size=2, checkpoint_path=tmp_path / "c.npz",
                            progress=False)
    counts, scalars = rank_of_two["reduced"]
    assert not counts.any() and scalars.tolist() == [0, 0]
    with np.load(tmp_path / "c.npz.rank1-of-2") as z:
        assert (int(z["position"]), int(z["n_tokens"]), int(z["n_sequences"]),
                int(z["over_zero"].sum())) == (0, 0, 0, 0)
    assert got.n_tokens == 0 and got.over_zero.shape == (3, 48)


def test_out_of_memory_at_batch_size_2_goes_down_to_1(monkeypatch, caplog):
    model, p = tiny_model("llama"), corpus(3)
    plain = count_activations(model, p, batch_size=1, progress=False)
    oom_above(monkeypatch, model.model.layers[0].mlp, 1)
    with caplog.at_level(logging.WARNING, logger="lape_hub.activation_counts"):
        got = count_activations(model, p, batch_size=2, progress=False)
    assert [r.getMessage() for r in caplog.records] == [
        "out of memory at batch size 2; halving it to 1 and going on"]
    assert (got.n_tokens, got.n_sequences) == (plain.n_tokens, 3)
    np.testing.assert_array_equal(got.over_zero, plain.over_zero)
