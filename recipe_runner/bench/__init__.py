"""`recipe bench`: throughput, MFU and memory of a recipe's real architectures with random weights.

One module per job: lengths (shipped prompt-length distribution), models (random / shrunk architectures),
flops (formula and peaks), timing (device clocks and memory), training / teacher / aligner / inference (the
sections), report (JSON and table), run (the orchestration).
"""
