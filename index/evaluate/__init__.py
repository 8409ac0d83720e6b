"""The paper's protocol over an index: what `benchmark` and `compare` run.

  benchmark     the resumable retrieval benchmark runner over a test split
  methods       the methods it runs: real, oracle and the generators, as editors of the
                index's schema
  report        a benchmark's summary.json, .md and top-k plot
  compare/      the paper's whole comparison (`amgan-search compare`): the methods' models at one
                iteration, their benchmark and edits, the table with 95% intervals
"""
