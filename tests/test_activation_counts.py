"""Activation counting: exact counts for every family, checkpoints, SIGKILL resume, OOM, torchrun."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tiny_models import FAMILIES, N_LAYERS, D_FFN, SAMPLE_TEXTS, save_tiny, tiny_model, tiny_tokenizer
from lape_hub.activation_counts import ActivationCounts, count_activations, init_distributed
from lape_hub.corpus import tokenize_and_pack
from lape_hub.errors import LapeHubError
from lape_hub.ffn import find_ffn_layers

TESTS = Path(__file__).resolve().parent
SEQ_LEN = 24


@pytest.fixture(scope="module")
def packed():
    # 8 full rows and a partly padded last row
    p = tokenize_and_pack(SAMPLE_TEXTS * 1, tiny_tokenizer(), seq_len=SEQ_LEN, min_tokens=1)
    assert p.attention_mask[-1].sum() < SEQ_LEN and p.attention_mask[:-1].all()
    return p


#: Half-width of the rounding band around 0: a gate pre-activation this close to 0 may change
#: sign between the batched, padded forward and the plain per-row one (float32 sums in another
#: order differ by ~1e-7 relative, a few 1e-6 after three layers). Outside it, counts must agree.
ROUNDING_BAND = 1e-4


def reference_counts(model, packed, skip_token_id=None) -> tuple[ActivationCounts, np.ndarray]:
    """The plain way: full CausalLM forward per row, capture MLP inputs, gate by hand.

    Returns the counts and, per neuron, how many counted tokens had a gate pre-activation
    inside the rounding band (the only tokens on which the batched count may differ).
    """
    layers = find_ffn_layers(model)
    over = np.zeros((len(layers), layers[0].d_ffn), dtype=np.int64)
    near = np.zeros_like(over)
    n_tokens = 0
    for row in range(packed.n_sequences):
        n = int(packed.attention_mask[row].sum())
        ids = packed.input_ids[row : row + 1, :n]  # drop padding instead of masking it
        keep = (ids != skip_token_id).reshape(-1) if skip_token_id is not None else torch.ones(n, dtype=torch.bool)
        n_tokens += int(keep.sum())
        seen = {}
        hs = [l.mlp.register_forward_pre_hook(lambda m, a, i=l.index: seen.__setitem__(i, a[0])) for l in layers]
        with torch.no_grad():
            model(input_ids=ids)
        for h in hs:
            h.remove()
        for l in layers:
            pre = F.linear(seen[l.index], l.gate.weight).reshape(-1, l.d_ffn)[keep]
            over[l.index] += (l.act(pre) > 0).sum(0).numpy()
            near[l.index] += (pre.abs() < ROUNDING_BAND).sum(0).numpy()
    return ActivationCounts(n_tokens, over, packed.n_sequences), near


def assert_same(a: ActivationCounts, b: ActivationCounts) -> None:
    assert a.n_tokens == b.n_tokens and a.n_sequences == b.n_sequences
    np.testing.assert_array_equal(a.over_zero, b.over_zero)


def assert_matches_reference(got: ActivationCounts, ref: ActivationCounts, near: np.ndarray) -> None:
    """Exact outside the rounding band: a neuron's count may differ from the reference by at
    most the number of its tokens whose gate pre-activation was within ROUNDING_BAND of 0."""
    assert got.n_tokens == ref.n_tokens and got.n_sequences == ref.n_sequences
    diff = np.abs(got.over_zero - ref.over_zero)
    assert (diff <= near).all(), f"{int((diff > near).sum())} neurons differ beyond rounding"
    assert near.sum() <= 0.001 * got.n_tokens * got.over_zero.size  # the band is rare: not vacuous


@pytest.mark.parametrize("family", FAMILIES)
def test_counts_match_hand_computation(family, packed):
    model = tiny_model(family)
    got = count_activations(model, packed, batch_size=4, progress=False)
    assert got.over_zero.dtype == np.int64 and got.over_zero.shape == (N_LAYERS, D_FFN)
    assert got.n_tokens == int(packed.attention_mask.sum())
    assert_matches_reference(got, *reference_counts(model, packed))
    assert 0 < got.probabilities().mean() < 1


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_skipped_bos_positions_are_not_counted(family, packed):
    """--bos skip: BOS still goes through the model, its positions are not counted."""
    model = tiny_model(family)
    bos = tiny_tokenizer().bos_token_id
    n_bos = int(((packed.input_ids == bos) & packed.attention_mask.bool()).sum())
    assert n_bos == len(SAMPLE_TEXTS)  # one BOS per document
    got = count_activations(model, packed, batch_size=4, progress=False, skip_token_id=bos)
    assert got.n_tokens == int(packed.attention_mask.sum()) - n_bos
    assert_matches_reference(got, *reference_counts(model, packed, skip_token_id=bos))
    every = count_activations(model, packed, batch_size=4, progress=False)
    assert (got.over_zero <= every.over_zero).all() and (got.over_zero != every.over_zero).any()


def test_gelu_negative_zero_is_not_a_firing(packed):
    """GELU gives exactly -0.0 below about -12 (and 0.0 at 0): neither is > 0, so counting
    with >= 0 (or by sign bit) would be caught here."""
    model = tiny_model("gemma3")
    mlp = model.model.layers[0].mlp
    act = find_ffn_layers(model)[0].act
    out = act(torch.tensor([-20.0, 0.0]))
    assert out.tolist() == [0.0, 0.0] and torch.signbit(out).tolist() == [True, False]
    gate = torch.nn.Linear(mlp.gate_proj.in_features, mlp.gate_proj.out_features, bias=True)
    with torch.no_grad():
        gate.weight.zero_()
        bias = torch.full((D_FFN,), 1.0)
        bias[:16] = -20.0   # act = -0.0 on every token
        bias[16:32] = 0.0   # act = +0.0 on every token
        gate.bias.copy_(bias)
    mlp.gate_proj = gate
    got = count_activations(model, packed, batch_size=4, progress=False)
    assert got.over_zero[0, :32].tolist() == [0] * 32
    assert got.over_zero[0, 32:].tolist() == [got.n_tokens] * (D_FFN - 32)


def test_lm_head_never_runs_and_model_mode_restored(packed):
    model = tiny_model("llama").train()
    model.lm_head.register_forward_hook(lambda *a: pytest.fail("LM head ran"))
    count_activations(model, packed, batch_size=3, progress=False)
    assert model.training


def test_checkpoint_is_kept_and_reused(packed, tmp_path):
    model = tiny_model("gemma3")
    plain = count_activations(model, packed, batch_size=2, progress=False)
    ckpt = tmp_path / "c.npz"
    assert_same(count_activations(model, packed, batch_size=2, checkpoint_path=ckpt, checkpoint_every=3,
                                  progress=False), plain)
    assert ckpt.exists() and not list(tmp_path.glob(".tmp-*"))
    model.model.forward = lambda *a, **k: pytest.fail("finished checkpoint should not recount")
    assert_same(count_activations(model, packed, batch_size=2, checkpoint_path=ckpt, progress=False), plain)


def test_checkpoint_of_another_corpus_is_refused(packed, tmp_path):
    model = tiny_model("llama")
    ckpt = tmp_path / "c.npz"
    count_activations(model, packed, batch_size=4, checkpoint_path=ckpt, progress=False)
    other = tokenize_and_pack(SAMPLE_TEXTS[::-1], tiny_tokenizer(), seq_len=SEQ_LEN, min_tokens=1)
    with pytest.raises(LapeHubError, match="another corpus"):
        count_activations(model, other, batch_size=4, checkpoint_path=ckpt, progress=False)
    # the same tokens counted by another rule or in another dtype do not resume either
    with pytest.raises(LapeHubError, match="another corpus"):
        count_activations(model, packed, batch_size=4, checkpoint_path=ckpt, progress=False,
                          skip_token_id=1)
    with pytest.raises(LapeHubError, match="another corpus"):
        count_activations(model.to(torch.bfloat16), packed, batch_size=4, checkpoint_path=ckpt,
                          progress=False)


def test_fastest_threads_is_measured_once_and_cached(tmp_path, monkeypatch):
    import lape_hub.activation_counts as ac

    monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path))
    timed = []
    monkeypatch.setattr(ac, "_time_threads", lambda n, dtype: timed.append(n) or {1: 2.0}.get(n, 1.0 + n / 100))
    monkeypatch.setattr(ac.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setattr(ac.os, "cpu_count", lambda: 4)
    assert ac.fastest_threads() == 2  # 1 thread: 2.0 s, 2: 1.02 s, 4: 1.04 s
    assert sorted(timed) == [1, 2, 4] and (tmp_path / "threads.json").is_file()
    timed.clear()
    assert ac.fastest_threads() == 2 and timed == []  # cached: not measured again
    before = torch.get_num_threads()
    try:
        assert ac.set_threads(3) == 3 and torch.get_num_threads() == 3
        assert ac.set_threads() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        ac.set_threads(0)


def oom_above(monkeypatch, mlp: torch.nn.Module, max_batch: int, message: str = "CUDA out of memory") -> None:
    """Make ``mlp`` raise CUDA's out-of-memory error for batches larger than ``max_batch``."""
    real_forward = mlp.forward

    def flaky(x):
        if x.shape[0] > max_batch:
            raise torch.OutOfMemoryError(message)
        return real_forward(x)

    monkeypatch.setattr(mlp, "forward", flaky)


def test_out_of_memory_halves_the_batch(packed, caplog, monkeypatch):
    model = tiny_model("qwen2")
    plain = count_activations(model, packed, batch_size=8, progress=False)
    mlp = model.model.layers[1].mlp  # fails mid-forward: earlier layers have already counted
    oom_above(monkeypatch, mlp, 2, "CUDA out of memory. Tried to allocate 1 GiB")
    with caplog.at_level(logging.WARNING, logger="lape_hub.activation_counts"):
        got = count_activations(model, packed, batch_size=8, progress=False)
    assert_same(got, plain)
    assert [r.getMessage() for r in caplog.records] == [
        "out of memory at batch size 8; halving it to 4 and going on",
        "out of memory at batch size 4; halving it to 2 and going on",
    ]
    monkeypatch.setattr(mlp, "forward", lambda x: (_ for _ in ()).throw(RuntimeError("DefaultCPUAllocator: not enough memory")))
    with pytest.raises(LapeHubError, match="even with batch size 1"):
        count_activations(model, packed, batch_size=2, progress=False)
    monkeypatch.setattr(mlp, "forward", lambda x: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not swallowed
        count_activations(model, packed, batch_size=2, progress=False)


def test_save_load_roundtrip_and_add(tmp_path):
    c = ActivationCounts(10, np.arange(6).reshape(2, 3), 2)
    c.save(tmp_path / "x.npz")
    d = ActivationCounts.load(tmp_path / "x.npz")
    assert_same(c, d)
    s = c + d
    assert s.n_tokens == 20 and s.over_zero.tolist() == [[0, 2, 4], [6, 8, 10]]


def test_init_distributed_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)


# ----------------------------------------------------------------- subprocess tests
WORKER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from lape_hub.activation_counts import count_activations, init_distributed
    from lape_hub.corpus import read_documents, tokenize_and_pack

    model_dir, corpus, ckpt, out, kill_after = sys.argv[1:6]
    torch.set_num_threads(1)
    info = init_distributed()
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    packed = tokenize_and_pack(read_documents(corpus), tok, seq_len=16, min_tokens=1)
    calls = [0]
    real = model.model.forward
    def forward(*a, **k):
        calls[0] += 1
        if calls[0] > int(kill_after) >= 0:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: like the OOM killer
        return real(*a, **k)
    model.model.forward = forward
    counts = count_activations(model, packed, batch_size=2, checkpoint_path=None if ckpt == "-" else ckpt,
                               checkpoint_every=4, progress=False)
    if info.is_main:
        counts.save(out)
        print("forward calls", calls[0], "rows", packed.n_sequences, "world", info.world_size)
    """
)


@pytest.fixture(scope="module")
def subprocess_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("sub")
    save_tiny("llama", d / "model")
    (d / "corpus.txt").write_text("\n".join(SAMPLE_TEXTS * 3) + "\n", encoding="utf-8")
    (d / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    return d, env


def _in_process(d: Path) -> ActivationCounts:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lape_hub.corpus import read_documents

    model = AutoModelForCausalLM.from_pretrained(d / "model").eval()
    tok = AutoTokenizer.from_pretrained(d / "model")
    packed = tokenize_and_pack(read_documents(d / "corpus.txt"), tok, seq_len=16, min_tokens=1)
    assert packed.n_sequences >= 12
    return count_activations(model, packed, batch_size=2, progress=False)


def test_sigkill_and_resume_gives_identical_counts(subprocess_setup):
    d, env = subprocess_setup
    ckpt, out = d / "kill.ckpt.npz", d / "kill.out.npz"
    args = [sys.executable, str(d / "worker.py"), str(d / "model"), str(d / "corpus.txt"), str(ckpt), str(out)]
    first = subprocess.run([*args, "3"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert ckpt.exists() and not out.exists()  # killed after the checkpoint at row 4, before the end
    second = subprocess.run([*args, "-1"], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    calls, rows = (int(x) for x in second.stdout.split()[2:5:2])
    assert calls == (rows - 4 + 1) // 2  # resumed at row 4: only the rest was recomputed
    assert_same(ActivationCounts.load(out), _in_process(d))


def test_torchrun_two_processes_equal_one(subprocess_setup):
    d, env = subprocess_setup
    out = d / "dist.out.npz"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(d / "worker.py"), str(d / "model"), str(d / "corpus.txt"), "-", str(out), "-1"]
    # own process group, so a hang kills the workers too (not only the launcher)
    proc = subprocess.Popen(cmd, env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun timed out")
    assert proc.returncode == 0, stderr[-3000:]
    assert "world 2" in stdout
    assert_same(ActivationCounts.load(out), _in_process(d))
