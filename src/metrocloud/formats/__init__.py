"""Codecs for outside formats: data that metrocloud reads but does not define.

- :mod:`metrocloud.formats.ocmf`: the Open Charge Metering Format (S.A.F.E. e.V., OCMF 1.2),
  signed meter readings of EV charging points under German calibration law; parser and
  verifier.
- :mod:`metrocloud.formats.transparenz`: the XML container of the S.A.F.E. e.V.
  Transparenzsoftware (``<values><value><signedData/><publicKey/></value></values>``).
- :mod:`metrocloud.formats.batches`: the signed measurement batch of a metrological IoT
  device ("metrocloud signed batch v1"), what devices send and the node's intake verifies.

Everything here is untrusted input: every failure is a
:class:`~metrocloud.domain.errors.InvalidInput` or a
:class:`~metrocloud.domain.errors.VerificationError` carrying evidence (expected, found, rule),
never another exception type.
"""

from __future__ import annotations

__all__: list[str] = []
