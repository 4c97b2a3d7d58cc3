"""dicomd's benchmark harness (issue 7): ``scripts/bench`` or ``python -m bench``.

Every figure is measured against baselines started in the same run (a bare pynetdicom receiver,
dcmtk's storescp when installed) and reported as medians of several runs plus paired ratios."""
