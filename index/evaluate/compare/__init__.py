"""The paper's whole comparison (`amgan-search compare`), in the order it runs:

  models   its settings, the common iteration, the runs trained (resumed) and exported to it
  run      `run_comparison`: models, benchmark, edits, report
  table    comparison.json, .md and .png: every method by every grader and metric, with intervals
"""
