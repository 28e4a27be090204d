"""Training: run the generated train.py on this host or in a container, one failure mapping."""
