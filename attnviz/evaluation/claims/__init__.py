"""The attention papers' claims, checked: ``attnviz claims``.

* :mod:`.catalogue` — the claims as data (:data:`CLAIMS`: sentence, source, one-line test, test, threshold,
  model types), the verdict rule and the rows;
* :mod:`.measure` — the per-image measurements results.json lacks, from one recorded pass per network;
* :mod:`.run` — :func:`run_claims`: results.json (eval first when needed), the pass, claims.json / claims.md;
* :mod:`.markdown` — claims.md, generated from claims.json alone.
"""
from attnviz.evaluation.claims.catalogue import (
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTED,
    Claim,
    Paired,
    Within,
    claim_rows,
    verdict,
)
from attnviz.evaluation.claims.run import run_claims

__all__ = ["CLAIMS", "FAILS", "HOLDS", "INCONCLUSIVE", "NOT_TESTED", "Claim", "Paired", "Within", "claim_rows",
           "run_claims", "verdict"]
