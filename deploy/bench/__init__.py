"""Measure and judge: the timing loop, bench over runtimes × batch sizes, its reports, the regression gate and the
deployment verdict. Imports core, runtimes, export, trainer and deploy/ top-level modules only."""
