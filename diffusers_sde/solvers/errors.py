"""The error every solver with an evaluation budget raises."""


class MaxNFEExceededError(RuntimeError):
    """The adaptive solver needed more network evaluations than ``max_nfe`` allows."""
