"""The benchmark runner behind ``verifier bench`` (see docs/bench.md).

instances.py reads instances.csv and chooses a subset; runner.py runs each instance as a verifier
subprocess (threads or Ray); check.py checks sat answers independently of the engine; score.py
scores them; report.py writes results.csv, summary.md and cactus.png; command.py ties it together.
"""
