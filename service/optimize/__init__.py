"""Build time: the pipeline that turns a variant's table row into a served artifact.

``pipeline.py`` runs a build (``densenet build``); ``technique.py`` is the contract each
technique module implements and the lookup from the variant table; one module per technique
(``baseline``, ``static_int8``, ``dynamic_int8``, ``pruning``, ``distillation``,
``tensorrt``); ``onnx_export.py`` exports and checks ONNX artifacts; ``data``, ``train`` and
``evaluate`` are the datasets, the training loop and the measurements.
"""
