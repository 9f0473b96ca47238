"""S3's XML documents: building responses, parsing the few request bodies that are XML."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from dynostore.s3.errors import S3Error

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
# Request bodies that are XML (Delete, CompleteMultipartUpload) are small.
MAX_XML_BYTES = 2 * 1024 * 1024

Tree = Mapping[str, Any] | Iterable[tuple[str, Any]]


def iso8601(moment: float) -> str:
    """``moment`` (seconds since the epoch) as S3 writes it in XML: ``2026-12-01T18:00:00.000Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 1000):03d}Z"


def http_date(moment: float) -> str:
    """``moment`` as an HTTP date (``Last-Modified``)."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(moment))


def _fill(parent: ET.Element, children: Tree) -> None:
    items = children.items() if isinstance(children, Mapping) else children
    for tag, value in items:
        if value is None:
            continue
        element = ET.SubElement(parent, tag)
        if isinstance(value, Mapping | list):
            _fill(element, value)
        elif isinstance(value, bool):
            element.text = "true" if value else "false"
        else:
            element.text = str(value)


def document(root: str, children: Tree, namespace: bool = True) -> bytes:
    """An XML document ``<root>`` holding ``children``: (tag, value) pairs, nested as mappings or pair lists."""
    element = ET.Element(root, {"xmlns": NAMESPACE} if namespace else {})
    _fill(element, children)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")


def error_document(error: S3Error, resource: str, request_id: str) -> bytes:
    """S3's ``<Error>`` document."""
    return document(
        "Error",
        [("Code", error.code), ("Message", error.message), ("Resource", resource), ("RequestId", request_id)],
        namespace=False,
    )


def parse(body: bytes) -> ET.Element:
    """The root element of an XML request body, namespaces stripped from tags.

    Raises:
        S3Error: MalformedXML.
    """
    if len(body) > MAX_XML_BYTES or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or too large.")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed.") from None
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]
    return root
