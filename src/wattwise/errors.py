"""One exception family. Every message names the problem and the fix in one line."""

from __future__ import annotations


class WattwiseError(Exception):
    """Base of every error wattwise raises on purpose; the CLI prints it as one line, exit 2."""

    exit_code = 2


class UnknownModelError(WattwiseError):
    """A model spec that matches no built-in, factory, directory or file."""


class ModelLoadError(WattwiseError):
    """A factory, weights file, Hugging Face directory or ONNX file that cannot be loaded."""


class WeightsMismatchError(ModelLoadError):
    """A weights file whose keys or shapes do not fit the model."""


class DataError(WattwiseError):
    """User data that cannot be read or does not fit the task."""


class ConfigError(WattwiseError):
    """A recipe, search space, budget or config with an unknown or invalid field."""


class UnsupportedOnDeviceError(WattwiseError):
    """A step or backend the chosen device cannot run."""


class OutputPathError(WattwiseError):
    """An output path that cannot be written."""


class VariantIntegrityError(WattwiseError):
    """A variant directory whose files do not match its manifest."""


class NoCandidateWithinBudgetError(WattwiseError):
    """optimize found no candidate within the quality budget (exit code 3, documented)."""

    exit_code = 3


class ModelRunError(WattwiseError):
    """A user's model that fails when run on inputs of the shape and dtype it was given."""


class UntrustedCodeError(ModelLoadError):
    """A variant whose source is a module:factory: loading it would import and run code."""
