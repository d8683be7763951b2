"""The only package that imports onnxruntime.

- :mod:`~quantuna.ort.options`: the one table of onnxruntime option spellings;
- :mod:`~quantuna.ort.calibrate`: tensor ranges, computed once per setting and cached on disk;
- :mod:`~quantuna.ort.quantize`: a ``QuantConfig`` -> onnxruntime's quantizers;
- :mod:`~quantuna.ort.session`: sessions and the evaluation loop;
- :mod:`~quantuna.ort.measure` and :mod:`~quantuna.ort.footprint`: one model file -> its values.

It decides no policy: the study layer says what to quantize and how to read the numbers.
"""
