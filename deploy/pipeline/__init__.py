"""The whole chain for one checkpoint: train → export each precision → bench and task parity on every runtime →
report.json / report.md and plots. May import every other deploy sub-package."""
