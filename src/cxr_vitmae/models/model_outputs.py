"""How every cxr-vitmae model returns its outputs: a `ModelOutput`, or a tuple when asked (`return_dict=False`).

This file is copied into saved model directories (remote code), so it imports only torch and transformers' public API.
"""

from transformers.utils import ModelOutput


def as_requested(output: ModelOutput, return_dict: bool | None, config) -> ModelOutput | tuple:
    """`output` itself, or its non-None fields as a tuple when `return_dict` (default: `config.return_dict`) is False,
    as transformers' own models do."""
    if return_dict is None:
        return_dict = config.return_dict
    return output if return_dict else output.to_tuple()
