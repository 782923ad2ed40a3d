"""Reading and setting an ONNX node's attributes (onnx.helper has getters per attribute, no setter)."""
from __future__ import annotations

import onnx
from onnx import helper


def attrs(node: onnx.NodeProto) -> dict:
    """{attribute name: Python value}."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    """Set (or replace) one attribute, keeping the others."""
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])
