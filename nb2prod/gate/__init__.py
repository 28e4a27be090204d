"""Gates: decide whether a new model may replace the one in production.

``compare``  the offline gate: two build directories' model cards, metric by metric
"""
