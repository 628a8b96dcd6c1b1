"""Internals of :mod:`metrocloud.services.compliance`: the report model, the criteria for
one instrument and for a fleet, and the HTML and PDF renderings with their charts."""

__all__: list[str] = []
