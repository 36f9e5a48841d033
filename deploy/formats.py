"""The report formats the toolkit writes: name and version, read back by the regression gate (one place, no imports)."""

BENCH_FORMAT = "alexnet-deploy/bench-report"       # bench --json
BENCH_FORMAT_VERSION = 2   # 2: per-call samples by round, 95 % intervals, the machine's load
PIPELINE_FORMAT = "alexnet-deploy/pipeline-report"  # pipeline OUT/report/report.json
# 2: rows name their file (model), skipped runtime × precision pairs; 3: rows carry their latency CV, the report a
# recommendation and (with --baseline) a gate; 4: rows carry their samples by round and 95 % intervals
PIPELINE_FORMAT_VERSION = 4
CAPACITY_FORMAT = "alexnet-deploy/capacity-report"  # capacity OUT/capacity.json
CAPACITY_FORMAT_VERSION = 1
