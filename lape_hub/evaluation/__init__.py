"""Evaluation of models and adapters on the paper's tasks; results go to the ``evals`` table.

One module per task, each declaring its data, prompt template and scoring once (like
lm-eval's tasks)::

    translation   X→en and en→X on FLORES-200, sacrebleu BLEU (sentence-averaged, corpus), chrF++
    topic         SIB-200 7 topics: accuracy by generation and by option log-likelihood
    belebele      reading comprehension (local files or the Hub), log-likelihood accuracy
    perplexity    held-out text of the target language, English and any list
    general       MMLU, HellaSwag, ARC, PIQA, Winogrande... through lm-eval

and the machinery they share: ``generation`` (greedy, batched, KV cache), ``tasks`` (context,
results, data, prompt hashes), ``evaluator`` (load a base/adapted/merged model, run tasks,
rows), ``results`` (the ``evals`` table), ``significance`` (paired bootstrap), ``report``
(the paper-style comparison of stored results: Markdown, PNG, the catalog card's summary).

Importing this package imports nothing heavy: ``results``, ``significance`` and ``report``
work without torch.

Example::

    >>> from lape_hub.evaluation.evaluator import load_system, evaluate     # doctest: +SKIP
    >>> run = evaluate(load_system("gemma-3-270m"), "fra_Latn", ["translation"], limit=16)  # doctest: +SKIP
"""
