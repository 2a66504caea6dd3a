"""The classification loss of every cxr-vitmae classifier, chosen by `config.problem_type`."""

import torch
from torch import nn


def chest_xray_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None
) -> torch.Tensor:
    """Loss for `logits` of shape (batch, num_labels).

    - `multi_label_classification`: binary cross-entropy with logits on float multi-hot `labels`. NaN marks an
      unknown label (CheXpert's "ignore" policy, a blank), which contributes neither to the sum nor to the count,
      so the loss is the mean over the known entries only.
    - `single_label_classification`: cross-entropy on integer class indices.
    - `regression`: mean squared error.
    - `None` (a config saved without a problem type): inferred as transformers does, from the number of outputs and
      the label dtype.
    """
    if problem_type is None:
        if logits.shape[-1] == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "multi_label_classification":
        labels = labels.to(logits.dtype)
        known = ~torch.isnan(labels)
        per_entry = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.where(known, labels, torch.zeros_like(labels)), reduction="none"
        )
        # clamp: a batch whose labels are all unknown gives 0 loss (and 0 gradient), not NaN.
        return (per_entry * known).sum() / known.sum().clamp(min=1)
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits, labels.long().view(-1))
    if problem_type == "regression":
        return nn.functional.mse_loss(logits.squeeze(-1) if logits.shape[-1] == 1 else logits, labels.to(logits.dtype))
    raise ValueError(
        f"problem_type must be 'multi_label_classification', 'single_label_classification' or 'regression', "
        f"got {problem_type!r}"
    )
