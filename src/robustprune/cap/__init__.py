"""CAP: contrastive pruning during fine-tuning (Xu et al., AAAI 2022, arXiv 2112.07198).

The pruned student is trained with cross-entropy and distillation from the dense teacher plus InfoNCE terms
that keep its sentence representation close to three references: the pre-trained encoder (PrC), the
fine-tuned teacher (FiC) and its own snapshots at earlier sparsities (SnC). One algorithm a module:

* :mod:`.loss` — the representation, the contrastive loss (the reference code's normalisation), KD, total;
* :mod:`.banks` — memory banks of L2-normalised training-set representations, indexed by example id;
* :mod:`.schedule` — the cubic sparsity schedule (dense warm-up, cubic ramp, hold);
* :mod:`.masks` — unstructured masks on every encoder Linear (magnitude, movement, soft movement) through
  ``torch.nn.utils.parametrize``, and :func:`~.masks.bake` back to a plain classifier;
* :mod:`.structured` — CAP-f: head / FFN-neuron gates, first-order importance, selection, physical removal,
  save and load of the smaller model;
* :mod:`.train` — one training stage (unstructured ramp + hold, or a structured retraining step);
* :mod:`.latency` — CPU latency with ``torch.utils.benchmark``;
* :mod:`.report` — the Markdown section of the report.

Pure library: tensors and modules in, tensors and small dataclasses out (no orchestration imports).
"""
