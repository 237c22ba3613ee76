"""OnnxParser: fills an INetworkDefinition from an ONNX model."""
import os

from . import _kiln
from .network import INetworkDefinition


class OnnxParser:
    """TensorRT's OnnxParser, except that a failed parse raises (the message lists every problem, each unsupported
    node included); the problems also stay available through num_errors and get_error(i)."""

    def __init__(self, network, logger):
        if not isinstance(network, INetworkDefinition):
            raise TypeError(f"network must be an INetworkDefinition, got {type(network).__name__}")
        self._network = network
        self._logger = logger
        self._parser = _kiln._OnnxParser(network._net, logger)

    def parse(self, model, path=None):
        """Parses serialized ONNX bytes; `path` (the model's file) locates external weights. Returns True."""
        self._parser.parse(model, None if path is None else os.fspath(path))
        return True

    def parse_from_file(self, model):
        self._parser.parse_from_file(os.fspath(model))
        return True

    @property
    def num_errors(self):
        return self._parser.num_errors

    def get_error(self, index):
        return self._parser.get_error(index)

    def clear_errors(self):
        self._parser.clear_errors()

    def supports_operator(self, op_name, domain=""):
        return _kiln.is_operator_supported(op_name, domain)
