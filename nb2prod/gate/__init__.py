"""Gates: decide whether a new model may replace the one in production.

``compare``  the offline gate: two build directories' model cards, metric by metric
``quality_html``  the quality report as one self-contained HTML page (plots in quality_html_plots)
"""
