"""Table II measured honestly: exact parameter counts, true peak training memory, merged and unmerged latency.

What is measured lives in `runner.py` (the orchestration) and `worker.py` (one configuration, in its own process);
how it is measured in `kdlora.meters` (shared with training); the inputs in `evalset.py`; the models come from
`kdlora.modeling`; the outputs in `table.py`.
"""
