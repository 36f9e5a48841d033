"""The use cases that chain the runtimes and the exporter, one sub-package each: bench/ (timing, bench, gate,
verdict), pipeline/ (train → export → bench → report), predict/, triton/. The modules at this level are what they
share (which model a runtime runs, inputs, progress, number formats, task parity, report formats)."""
