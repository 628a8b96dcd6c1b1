"""Semantic ids of published IDTA submodel templates that the mapping follows.

- IDTA 02006-2-0 *Digital Nameplate for Industrial Equipment* (October 2022): the submodel
  id ``https://admin-shell.io/zvei/nameplate/2/0/Nameplate`` (version 2.0 kept the ZVEI
  namespace; ``.../idta/nameplate/3/0/...`` is version 3.0) and ECLASS IRDIs per element,
  as in the template's AASX/JSON published by IDTA (admin-shell-io/submodel-templates).
- IDTA 02008-1-1 *Time Series Data*: ``https://admin-shell.io/idta/TimeSeries/...``.
"""

from __future__ import annotations

__all__ = [
    "COMPANY",
    "CONTACT_INFORMATION",
    "MANUFACTURER_NAME",
    "MANUFACTURER_PRODUCT_DESIGNATION",
    "MANUFACTURER_PRODUCT_FAMILY",
    "NAMEPLATE",
    "NATIONAL_CODE",
    "SERIAL_NUMBER",
    "SOFTWARE_VERSION",
    "TS",
    "TS_ENDPOINT",
    "TS_LINKED_SEGMENT",
    "TS_METADATA",
    "TS_METADATA_DESCRIPTION",
    "TS_METADATA_NAME",
    "TS_QUERY",
    "TS_RECORD",
    "TS_SEGMENTS",
    "TS_SEGMENT_DESCRIPTION",
    "TS_SEGMENT_NAME",
    "TS_STATE",
    "TS_UTC_TIME",
    "URI_OF_THE_PRODUCT",
    "YEAR_OF_CONSTRUCTION",
]

# IDTA 02006-2-0 Digital Nameplate
NAMEPLATE = "https://admin-shell.io/zvei/nameplate/2/0/Nameplate"
URI_OF_THE_PRODUCT = "0173-1#02-AAY811#001"
MANUFACTURER_NAME = "0173-1#02-AAO677#002"
MANUFACTURER_PRODUCT_DESIGNATION = "0173-1#02-AAW338#001"
MANUFACTURER_PRODUCT_FAMILY = "0173-1#02-AAU731#001"
SERIAL_NUMBER = "0173-1#02-AAM556#002"
YEAR_OF_CONSTRUCTION = "0173-1#02-AAP906#001"
SOFTWARE_VERSION = "0173-1#02-AAM737#002"
CONTACT_INFORMATION = (
    "https://admin-shell.io/zvei/nameplate/1/0/ContactInformations/ContactInformation"
)
COMPANY = "0173-1#02-AAW001#001"
NATIONAL_CODE = "0173-1#02-AAO134#002"

# IDTA 02008-1-1 Time Series Data
_TS = "https://admin-shell.io/idta/TimeSeries/"
TS = _TS + "1/1"
TS_METADATA = _TS + "Metadata/1/1"
TS_METADATA_NAME = _TS + "Metadata/Name/1/1"
TS_METADATA_DESCRIPTION = _TS + "Metadata/Description/1/1"
TS_RECORD = _TS + "Record/1/1"
TS_UTC_TIME = _TS + "UtcTime/1/1"
TS_SEGMENTS = _TS + "Segments/1/1"
TS_LINKED_SEGMENT = _TS + "Segments/LinkedSegment/1/1"
TS_SEGMENT_NAME = _TS + "Segment/Name/1/1"
TS_SEGMENT_DESCRIPTION = _TS + "Segment/Description/1/1"
TS_STATE = _TS + "Segment/State/1/1"
TS_ENDPOINT = _TS + "Endpoint/1/1"
TS_QUERY = _TS + "Query/1/1"
