"""Specialization (layer 7): from a trained supernet to the best subnet for each budget (docs/method.md §9).

`python -m deps_fast.search` (cli.py) runs the whole step; the pieces: `encoding` (OFA's one-hot features and
an integer genome), `costs` (exact MFLOPs / parameters, additive tables), `latency` (a measured lookup table),
`evaluate` (an on-disk evaluation cache), `predictor` (OFA's MLP), `nsga` (pymoo's NSGA-II with budgets as
constraints), `export` (state dict, torch.export, ONNX), `pipeline` (the stages), `finetune`. Nothing here is
imported by `import deps_fast`; pymoo and onnx are imported only when used.
"""
