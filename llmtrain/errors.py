"""Exceptions whose message tells the user what is wrong and how to fix it."""


class UserError(RuntimeError):
    """A problem with the user's input (files, data, checkpoints); the message names the fix."""


class DataError(UserError):
    """Shards, manifests, tokenizers or datasets that are missing, corrupt or mismatched."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete or of another architecture."""
