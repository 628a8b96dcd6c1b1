"""The parts of :mod:`metrocloud.services.surveillance` (private; import from there).

- :mod:`.model`: the risk model's weights, facts and answers (pure dataclasses);
- :mod:`.scoring`: its arithmetic, pure (facts in, scores with their explanations out);
- :mod:`.facts`: the registry's facts about a fleet, in set-based queries;
- :mod:`.plan`: the inspection plan's selection rule, pure;
- :mod:`.lots`: lot decisions from inspection results, and their statements;
- :mod:`.notices`: non-compliance notices and which of them are open.
"""

from __future__ import annotations

__all__: list[str] = []
