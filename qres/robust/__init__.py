"""Robust aggregation beyond the rules themselves: the exact arithmetic the rules share
(:mod:`~qres.robust.aggregate`), reputations (:mod:`~qres.robust.reputation`) and the
aggregator bench (:mod:`~qres.robust.bench`)."""
