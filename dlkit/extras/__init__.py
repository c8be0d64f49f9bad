"""Optional helpers that serve experiments/ and benchmarks/ only, not the library.

`import dlkit` never imports this package; import a module by name when a script needs it:
- `dlkit.extras.plotting`: matplotlib (Agg) line plots, image grids and markdown tables;
- `dlkit.extras.profile`: FLOPs and bytes from XLA's cost analysis, roofline data, the one timer
  of the benchmarks (`time_round_robin`) and the machine a figure ran on (`machine`);
- `dlkit.extras.flash_check`: the flash-attention correctness sweep for a GPU machine;
- `dlkit.extras.word2vec`: the word2vec trainer (the shared train step in `lax.scan`).
Nothing in dlkit/ops, kernels, nn, data or train imports from here.
"""
