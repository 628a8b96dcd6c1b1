"""The XML container of the S.A.F.E. e.V. Transparenzsoftware.

The Transparenzsoftware (the verification program for EV charging under German calibration
law) reads signed meter values from a file of this shape::

    <values>
      <value transactionId=".." context="Transaction.Begin">
        <signedData format="OCMF" encoding="plain">OCMF|{...}|{...}</signedData>
        <publicKey encoding="hex">3059...</publicKey>
      </value>
      ...
    </values>

Every attribute is optional; ``signedData`` may be ``plain`` text, ``base64`` or ``hex``. This
module only unpacks the container: what the data means is the business of the format
(:mod:`metrocloud.formats.ocmf`). The input is untrusted: files over :data:`MAX_BYTES` and any
document type declaration or entity declaration are refused before parsing (no entity
expansion, no external resources), and malformed XML is reported with its line and column.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from xml.parsers import expat

from metrocloud.domain.errors import InvalidInput

__all__ = ["MAX_BYTES", "RULE_CONTAINER", "RULE_XML", "ContainerValue", "read_container"]

#: largest container accepted (16 MiB)
MAX_BYTES = 16 * 1024 * 1024
RULE_CONTAINER = "Transparenzsoftware XML container (<values><value><signedData/>...)"
RULE_XML = "XML 1.0 well-formedness; untrusted input: no DTD or entities, at most 16 MiB"
_REFUSED = (b"<!DOCTYPE", b"<!ENTITY")
#: root elements of other signed meter value files the Transparenzsoftware reads
_KNOWN_ROOTS = {
    "Billing": "Mennekes EDL billing XML (metra)",
    "ChargingProcess": "Mennekes EDL charging process XML",
    "signedMeterValue": "signedMeterValue XML (EDL format)",
}


@dataclass(frozen=True)
class ContainerValue:
    """One ``<value>`` of a container, unpacked but not interpreted."""

    #: position among the values of the file, from 0
    index: int
    #: the signed data as text (base64 and hex already decoded); None when absent
    signed_data: str | None
    #: the ``format`` attribute of ``signedData`` (e.g. "OCMF", "ISA_EDL_40_P")
    data_format: str | None = None
    data_encoding: str | None = None
    #: the public key text as written (hex or base64, whitespace kept); None when absent
    public_key: str | None = None
    key_encoding: str | None = None
    transaction_id: str | None = None
    context: str | None = None
    #: why the value cannot be read as signed text, when it cannot
    problem: str | None = None


def read_container(data: bytes, name: str) -> list[ContainerValue]:
    """The values of a Transparenzsoftware container; ``name`` names the file in errors.

    Raises :class:`InvalidInput` for an oversized file, a DTD or entity declaration,
    malformed XML (with line and column), or a document that is not such a container.
    """
    root = _parse(data, name)
    values = [child for child in root if _local(child.tag) == "value"]
    if not values:
        raise _not_container(root, name)
    return [_value(i, element) for i, element in enumerate(values)]


def _parse(data: bytes, name: str) -> ET.Element:
    """Parse with expat into an ElementTree, refusing DTDs and entities."""
    if len(data) > MAX_BYTES:
        raise _err(f"{name}: {len(data)} bytes, larger than the {MAX_BYTES} accepted", RULE_XML)
    _refuse_declarations(data, name)
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = lambda *_: _refuse(name, parser, "<!DOCTYPE")
    parser.EntityDeclHandler = lambda *_: _refuse(name, parser, "<!ENTITY")
    parser.StartElementHandler = lambda tag, attrs: builder.start(
        _qname(tag), {_qname(k): v for k, v in attrs.items()}
    )
    parser.EndElementHandler = lambda tag: builder.end(_qname(tag))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        what = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise _err(
            f"{name}: invalid XML at line {exc.lineno}, column {exc.offset + 1}: {what}",
            RULE_XML,
        ) from None
    return builder.close()


def _refuse_declarations(data: bytes, name: str) -> None:
    """Refuse a DOCTYPE or ENTITY declaration in UTF-8 and UTF-16, before any parsing."""
    upper = data.upper()
    for token in _REFUSED:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            pos = upper.find(token.decode().encode(encoding))
            if pos >= 0:
                line = data[:pos].count(b"\n") + 1
                raise _err(
                    f"{name}: {token.decode()} at line {line} refused: "
                    "no DTD and no entities in untrusted XML",
                    RULE_XML,
                )


def _refuse(name: str, parser: expat.XMLParserType, token: str) -> None:
    raise _err(
        f"{name}: {token} at line {parser.CurrentLineNumber} refused: "
        "no DTD and no entities in untrusted XML",
        RULE_XML,
    )


def _qname(expat_name: str) -> str:
    """expat's ``uri}local`` as ElementTree's ``{uri}local``."""
    return "{" + expat_name if "}" in expat_name else expat_name


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, local: str) -> Iterator[ET.Element]:
    return (child for child in element if _local(child.tag) == local)


def _not_container(root: ET.Element, name: str) -> InvalidInput:
    tag = _local(root.tag)
    known = _KNOWN_ROOTS.get(tag)
    what = f"not OCMF: {known}" if known else "no <value> element in it"
    return _err(
        f"{name}: not a Transparenzsoftware container: root element <{tag}>, {what}; "
        "expected <values> holding <value> elements",
        RULE_CONTAINER,
    )


def _value(index: int, element: ET.Element) -> ContainerValue:
    attrs = {_local(k): v for k, v in element.attrib.items()}
    common = {"transaction_id": attrs.get("transactionId"), "context": attrs.get("context")}
    key = next(_children(element, "publicKey"), None)
    key_text = "".join(key.itertext()).strip() if key is not None else ""
    if key is not None:
        common["key_encoding"] = key.get("encoding")
    signed = next(_children(element, "signedData"), None)
    if signed is None:
        return ContainerValue(
            index, None, public_key=key_text or None, problem=_missing(element), **common
        )
    fmt, encoding = signed.get("format"), signed.get("encoding")
    text, problem = _decode("".join(signed.itertext()), encoding)
    return ContainerValue(
        index,
        text,
        data_format=fmt,
        data_encoding=encoding,
        public_key=key_text or None,
        problem=problem,
        **common,
    )


def _missing(element: ET.Element) -> str:
    other = sorted({_local(child.tag) for child in element})
    if "encodedData" in other:
        encoded = next(_children(element, "encodedData"))
        attrs = " ".join(f'{k}="{v}"' for k, v in sorted(encoded.attrib.items()))
        return (
            f"not OCMF text: <encodedData {attrs}> holds a binary record "
            "(SAFE sealing with RSA), which this reader does not open"
        )
    found = ", ".join(f"<{t}>" for t in other) or "nothing"
    return f"value has no <signedData>; found {found}"


def _decode(text: str, encoding: str | None) -> tuple[str, str | None]:
    """The signed data as text: ``plain`` (default) as is, ``base64`` or ``hex`` decoded."""
    enc = (encoding or "plain").strip().lower()
    if enc == "plain":
        return text, None
    compact = "".join(text.split())
    try:
        raw = base64.b64decode(compact, validate=True) if enc == "base64" else None
        raw = bytes.fromhex(compact) if enc == "hex" else raw
    except (binascii.Error, ValueError):
        return text, f'signedData encoding="{encoding}" does not decode as {enc}'
    if raw is None:
        return text, f'signedData encoding="{encoding}" is unknown; expected plain, base64 or hex'
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return text, f'signedData encoding="{encoding}" decodes to binary data, not text'


def _err(message: str, rule: str) -> InvalidInput:
    return InvalidInput(f"{message} [{rule}]", rule=rule)
