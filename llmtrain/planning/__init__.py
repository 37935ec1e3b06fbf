"""Capacity planning before a run is submitted: memory per GPU and per node, and step time.

Pure arithmetic over a :class:`~llmtrain.model.config.ModelConfig` and the DeepSpeed config that
``llmtrain train`` would generate (:mod:`llmtrain.engine.ds_config`, which does not import
DeepSpeed): nothing here builds a model, imports DeepSpeed or touches a device. ``llmtrain plan``
prints the result; docs/scaling.md gives the formulas and what was measured against them.
"""
