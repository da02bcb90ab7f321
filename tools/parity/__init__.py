"""Parity harness: our toolkit vs the authors' MDQE code (github.com/MinghanLi/MDQE_CVPR2023).

The authors' code is imported from a checkout the user provides (`authors_env.load_authors`),
never copied into this repository. Each stage module (model, converter, tracker, criterion)
exposes `run(authors, args) -> dict`; `tools/authors_parity.py` holds the STAGES registry.
"""
