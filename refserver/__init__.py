"""Reference model server: a real (small) scikit-learn model behind the Open Inference Protocol v2.

A test and demo fixture, not part of the agent: it exports the `model_metrics` contract, supports the OIP
repository extension (load/unload), labelled outcomes and fault injection, so the agent can be proven
against a server that behaves like a real one. Run `python -m refserver --help`.
"""
