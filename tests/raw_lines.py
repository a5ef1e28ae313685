"""Lines that reached a terminal without going through a logger."""

from __future__ import annotations

import re

#: Lines librdkafka (``%4|1700000000.123|CONFWARN|...``) and TensorFlow's C++ logging
#: (``I0000 00:00:...``, absl's notice, CUDA probing, CPU feature notes) write themselves.
RAW = re.compile(
    r"^%\d+\|\d+\.\d+\||^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|cuInit|cudart|"
    r"oneDNN custom operations|This TensorFlow binary|rebuild TensorFlow"
)


def raw_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if RAW.search(line)]
